"""``hf-compress auto`` in-process on a tiny BERT folder: malformed targets exit 2 with one line and load
nothing, a plan's recipe run by ``hf-compress run`` rebuilds the same model, an unmeetable target writes the
best found and exits 3, ``--dry-run`` writes nothing. No test depends on a timing: the targets here are
parameter budgets."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from planner_helpers import texts, tiny_bert
from safetensors.torch import load_file

from hf_compress.cli import main
from hf_compress.recipe.auto import run_auto
from hf_compress.recipe.loading import char_tokenizer

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny_bert().save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(texts(80)))
    return str(path)


def weights(folder) -> dict:
    return load_file(f"{folder}/model.safetensors")


@pytest.mark.parametrize("target", ["speedup=0.5", "params=1.5", "flops=2", "speedup"])
def test_malformed_targets_exit_2_with_one_line_before_loading(tmp_path, capsys, target):
    out = tmp_path / "out"
    code = main(["auto", str(tmp_path / "no-such-model"), "--data", "x.txt", "--target", target,
                 "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("hf-compress auto: error: target")
    assert not out.exists()


def test_bad_options_exit_2(tmp_path, capsys):
    code = main(["auto", "m", "--data", "x.txt", "--target", "params=0.5", "--max-drop", "2"])
    assert code == 2 and "--max-drop must be" in capsys.readouterr().err


@pytest.fixture(scope="module")
def auto_run(model_dir, data_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("auto") / "out"
    result = run_auto(model_dir, data_file, "params=0.7", output_dir=str(out), heal_steps=2, distill_steps=3,
                      eval_samples=8, eval_max_length=32, top_k=2, progress=False,
                      space={"keep": (1.0, 0.5), "heads": (0.0, 0.5), "int8": (None,)})
    return result, out


def test_auto_writes_checkpoint_card_recipe_and_meets_the_parameter_budget(auto_run):
    result, out = auto_run
    assert result.met and result.plan.target.meets(result.measured)
    assert result.measured["params_ratio"] == pytest.approx(result.plan.predicted["params_ratio"])
    card = (out / "README.md").read_text()
    assert "How this plan was chosen" in card and "| candidate |" in card and "(chosen)" in card
    for name in ("recipe.yaml", "plan.json", "frontier.png", "auto-log.jsonl", "model.safetensors"):
        assert (out / name).is_file(), name
    assert json.loads((out / "plan.json").read_text())["met"] is True


def test_the_recipe_round_trips_through_hf_compress_run_to_the_same_model(auto_run, tmp_path, capsys):
    result, out = auto_run
    again = tmp_path / "again"
    assert main(["run", str(out / "recipe.yaml"), "--output-dir", str(again)]) == 0
    a, b = weights(out), weights(again)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    resolved = yaml.safe_load((out / "recipe.yaml").read_text())["stages"]  # every field spelled out
    assert [list(s) for s in resolved] == [list(s) for s in result.recipe["stages"]]
    for full, planned in zip(resolved, result.recipe["stages"]):
        ((name, fields),) = planned.items()
        assert {k: full[name][k] for k in fields} == fields


def test_unmeetable_target_writes_the_best_found_and_exits_3(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "best"
    code = main(["auto", model_dir, "--data", data_file, "--target", "params=0.01", "--output-dir", str(out),
                 "--heal-steps", "1", "--distill-steps", "1", "--top-k", "1", "--eval-samples", "8",
                 "--eval-max-length", "32", "--json"])
    captured = capsys.readouterr()
    assert code == 3
    assert "target missed" in captured.err and "misses by" in captured.err and str(out) in captured.err
    report = json.loads(captured.out)
    assert report["met"] is False and report["output_dir"] == str(out)
    assert (out / "model.safetensors").is_file()


def test_dry_run_plans_only(model_dir, data_file, tmp_path, capsys):
    out = tmp_path / "dry"
    log = tmp_path / "log.jsonl"
    code = main(["auto", model_dir, "--data", data_file, "--target", "params=0.3", "--output-dir", str(out),
                 "--heal-steps", "1", "--top-k", "1", "--eval-samples", "8", "--eval-max-length", "32",
                 "--dry-run", "--log", str(log)])
    printed = capsys.readouterr().out
    assert code in (0, 3) and not out.exists() and log.is_file()
    assert "| candidate |" in printed and "stages:" in printed


def test_a_plan_made_before_is_run_as_it_is(auto_run, model_dir, data_file, tmp_path, monkeypatch):
    import hf_compress.planner as planner
    from hf_compress.errors import HfCompressError

    result, out = auto_run
    monkeypatch.setattr(planner, "plan_compression", lambda *a, **k: pytest.fail("searched again"))
    again = tmp_path / "again"
    options = dict(heal_steps=2, distill_steps=3, eval_samples=8, eval_max_length=32, top_k=2, progress=False,
                   plan=result.plan)
    rerun = run_auto(model_dir, data_file, "params=0.7", output_dir=str(again), **options)
    assert rerun.plan is result.plan and rerun.recipe["stages"] == result.recipe["stages"]
    a, b = weights(out), weights(again)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(HfCompressError, match="`plan` must be a plan for target params=0.5, got one for params=0.7"):
        run_auto(model_dir, data_file, "params=0.5", output_dir=str(tmp_path / "x"), **options)
