"""Issue 15 items 7, 11, 12, 13, 20 (auto_map), 21 (model.config typos): what `run` and `bench` refuse about
a model folder or config, with exit 2 and before the weights are trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_compress.cli import main
from tiny_models import tiny_model

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


def _folder(tmp_path, name="model", safe=True, tokenizer=True, **overrides) -> Path:
    from hf_compress.recipe.loading import char_tokenizer

    folder = tmp_path / name
    tiny_model("bert", "base", **overrides).save_pretrained(folder, safe_serialization=safe)
    if tokenizer:
        char_tokenizer().save_pretrained(folder)
    return folder


def _run(folder, tmp_path, texts_path, capsys, *extra) -> tuple[int, str]:
    argv = ["run", str(TINY), "--set", f"model={{name_or_path: {folder}}}", "--set", "stages=[]",
            "--set", f"data.name={texts_path}", "--set", "evaluate=[size]", "--output-dir", str(tmp_path / "out"),
            *extra]
    code = main(argv)
    return code, (capsys.readouterr().err.strip().splitlines() or [""])[-1]


def test_a_pickle_only_folder_is_refused_by_run_and_bench(tmp_path, texts_path, capsys):
    folder = _folder(tmp_path, safe=False)
    if (folder / "model.safetensors").exists():  # transformers may write safetensors regardless
        (folder / "model.safetensors").unlink()
        torch.save(tiny_model("bert", "base").state_dict(), folder / "pytorch_model.bin")
    code, err = _run(folder, tmp_path, texts_path, capsys)
    assert code == 2 and "safetensors" in err and "weights_only=False" not in err, err
    assert main(["bench", str(folder), "--samples", "4", "--data", texts_path]) == 2
    err = capsys.readouterr().err
    assert "safetensors" in err and "weights_only=False" not in err
    assert not (tmp_path / "out").exists()


def test_a_folder_without_tokenizer_files_is_refused(tmp_path, texts_path, capsys):
    code, err = _run(_folder(tmp_path, tokenizer=False), tmp_path, texts_path, capsys)
    assert code == 2 and "tokenizer" in err, err


@pytest.mark.parametrize("claimed", [8, 2])
def test_a_config_that_disagrees_with_its_weights_is_refused(claimed, tmp_path, texts_path, capsys):
    folder = _folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["num_hidden_layers"] = claimed  # the weights have 4 layers
    (folder / "config.json").write_text(json.dumps(config))
    code, err = _run(folder, tmp_path, texts_path, capsys)
    assert code == 2 and ("missing" in err or "unexpected" in err), err


def test_an_unsupported_family_is_refused_before_loading_in_run_and_bench(tmp_path, texts_path, capsys):
    folder = tmp_path / "t5"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    code, err = _run(folder, tmp_path, texts_path, capsys)
    assert code == 2 and "t5" in err and len(err) < 500, err
    assert main(["bench", str(folder), "--samples", "4", "--data", texts_path]) == 2
    err = capsys.readouterr().err.strip()
    assert "t5" in err and len(err) < 500 and len(err.splitlines()) == 1


def test_bench_refuses_zero_samples_and_an_empty_folder(tmp_path, capsys):
    assert main(["bench", "minilm", "--samples", "0"]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["bench", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "config.json" in err


def test_an_untrusted_auto_map_is_not_copied_into_the_output(tmp_path, texts_path, capsys):
    folder = _folder(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModel": "custom.Model"}
    (folder / "config.json").write_text(json.dumps(config))
    code, err = _run(folder, tmp_path, texts_path, capsys)
    assert code == 0, err
    assert "auto_map" not in json.loads((tmp_path / "out" / "config.json").read_text())


def test_typos_inside_model_config_are_refused(tmp_path, texts_path, capsys):
    code = main(["run", str(TINY), "--set", "model.config.hiden_size=16", "--set", f"data.name={texts_path}",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "hiden_size" in err and "hidden_size" in err, err
