"""scripts/bench_heal.py end to end on its --tiny setup (a small Llama pre-trained in process, synthetic text)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
ROWS = [
    ("-", "original"),
    ("layers", "pruned"),
    ("layers", "healed: distillation"),
    ("layers", "healed: LM fine-tuning (no teacher)"),
    ("layers", "distilled + W8A16"),
    ("layers", "distilled + W8A8 (SmoothQuant auto + GPTQ)"),
    ("heads", "pruned"),
    ("heads", "healed: distillation"),
    ("heads", "healed: LM fine-tuning (no teacher)"),
    ("heads", "distilled + W8A16"),
    ("heads", "distilled + W8A8 (SmoothQuant auto + GPTQ)"),
]


def _load(name: str):
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load("bench_heal")


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("heal") / "heal.md"
    published = (SCRIPTS.parent / "benchmarks" / "heal.md")
    before = published.read_text() if published.exists() else None
    assert bench.main(["--tiny", "--output", str(out), "--set", "steps=6"]) == 0
    assert (published.read_text() if published.exists() else None) == before  # never the published table
    return out.read_text()


def _rows(text: str) -> list[list[str]]:
    lines = [ln for ln in text.splitlines() if ln.startswith("| ") and not ln.startswith("| compression")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def _num(cell: str):
    return None if cell == "—" else float(cell.rstrip("%×").replace(",", ""))


def test_tiny_table_rows_and_columns_agree(tiny_run, bench):
    rows = _rows(tiny_run)
    assert [(r[0], r[1].split(" (")[0] if r[1].startswith("pruned") else r[1]) for r in rows] == ROWS
    table = {(r[0], r[1].split(" (")[0] if r[1].startswith("pruned") else r[1]): r for r in rows}
    original = table[("-", "original")]
    for kind in ("layers", "heads"):
        pruned = table[(kind, "pruned")]
        kd, ft = table[(kind, "healed: distillation")], table[(kind, "healed: LM fine-tuning (no teacher)")]
        assert _num(pruned[2]) < _num(original[2])  # fewer parameters
        assert kd[9] == ft[9] == f"{6 * 4 * 32:,}"  # the same tokens in both arms
        for row in (kd, ft):  # recovered share = the log-perplexity formula on the table's own numbers
            for ppl_col, share_col in ((5, 7), (6, 8)):
                p0, p1, p2 = _num(original[ppl_col]), _num(pruned[ppl_col]), _num(row[ppl_col])
                expected = bench.heal_table.recovered(p0, p1, p2)
                if expected is None:
                    assert row[share_col] == "—"
                elif abs(math.log(p1) - math.log(p0)) > 0.05:  # away from rounding of the 2-decimal cells
                    assert _num(row[share_col]) == pytest.approx(100 * expected, abs=3)
        w8a16, w8a8 = table[(kind, "distilled + W8A16")], table[(kind, "distilled + W8A8 (SmoothQuant auto + GPTQ)")]
        assert _num(w8a16[3]) < 0.6 * _num(kd[3]) and _num(w8a8[3]) < 0.6 * _num(kd[3])  # int8 on disk
    assert "started" in tiny_run and "load average" in tiny_run and "--tiny" in tiny_run
    assert tiny_run.count("distillation recovered") == 2
    assert "its top-32 logits cached once" in tiny_run and "- teacher cache: top-32 logits of the 24" in tiny_run


def test_live_teacher_path(bench, tmp_path):
    out = tmp_path / "live.md"
    argv = ["--tiny", "--output", str(out)] + [f"--set={kv}" for kv in
                                               ("steps=2", "compressions=layers", "quantize=false", "teacher_cache=false")]
    assert bench.main(argv) == 0
    text = out.read_text()
    assert "(live teacher)" in text and "teacher cache:" not in text
    assert [r[1] for r in _rows(text)][2:] == ["healed: distillation", "healed: LM fine-tuning (no teacher)"]


def test_the_lm_loss_can_be_mixed_into_the_distillation_arm(bench, tmp_path):
    """alpha_task > 0: the distillation arm also reads the blocks' labels (a different model than pure KD),
    and the table says so; the fine-tuning arm is untouched."""
    texts = {}
    for alpha in (0.0, 0.5):
        out = tmp_path / f"a{alpha}.md"
        argv = ["--tiny", "--output", str(out), "--rows-json", str(tmp_path / f"a{alpha}.json")]
        argv += [f"--set={kv}" for kv in ("steps=2", "compressions=layers", "quantize=false", f"alpha_task={alpha}")]
        assert bench.main(argv) == 0
        texts[alpha] = out.read_text()
    rows = {a: {r[1]: r for r in _rows(t)} for a, t in texts.items()}
    assert "+ 0.5 × the LM loss" in texts[0.5] and "× the LM loss" not in texts[0.0]
    mixed = "healed: distillation + 0.5 × LM loss"  # its own label: a pure-KD run and this one merge
    assert mixed not in rows[0.0] and "healed: distillation" not in rows[0.5]
    assert rows[0.5][mixed][5:7] != rows[0.0]["healed: distillation"][5:7]
    ft = "healed: LM fine-tuning (no teacher)"
    assert rows[0.5][ft][5:7] == rows[0.0][ft][5:7]  # the same perplexities
    merged, notes, settings, name, context = bench.heal_table.merge_runs([str(tmp_path / f"a{a}.json")
                                                                          for a in (0.0, 0.5)])
    names = [r["model"] for r in merged]
    assert names.count("healed: distillation") == 1 and names.count(mixed) == 1 and names.count(ft) == 1
    text = bench.heal_table.render(merged, notes, settings, name, context)  # a verdict per distillation arm
    assert "**layers**: distillation recovered" in text
    assert "**layers**: distillation + 0.5 × LM loss recovered" in text


def test_recovered_share_formula(bench):
    rec = bench.heal_table.recovered
    assert rec(10.0, 40.0, 20.0) == pytest.approx(0.5)  # half the log gap: sqrt(10 * 40) would be 20
    assert rec(10.0, 40.0, 10.0) == pytest.approx(1.0) and rec(10.0, 40.0, 40.0) == pytest.approx(0.0)
    assert rec(10.0, 40.0, 80.0) == pytest.approx(-0.5)
    assert rec(10.0, 10.05, 10.0) is None  # pruning cost under 1%: no share
    assert rec(10.0, float("inf"), 20.0) is None and rec(10.0, 40.0, float("nan")) is None


def test_training_blocks_alternate_corpora_and_are_disjoint_from_heldout(bench):
    data = bench.heal_data
    tokenizer = data.tiny_tokenizer()
    corpora = data.Corpora(train={"a": ["the river crosses the city ."] * 40, "b": ["def parse ( x ) :"] * 40},
                           heldout={"a": ["x"], "b": ["y"]})
    blocks = data.training_blocks(tokenizer, corpora, 5, 8)
    assert blocks.shape == (5, 8)
    river, parse = tokenizer.convert_tokens_to_ids(["river", "parse"])
    assert [bool((b == river).any()) for b in blocks] == [True, False, True, False, True]
    assert [bool((b == parse).any()) for b in blocks] == [False, True, False, True, False]
    with pytest.raises(ValueError, match="fewer than the"):
        data.training_blocks(tokenizer, corpora, 1000, 8)


def test_real_corpora_use_the_one_heldout_rule(bench, monkeypatch):
    import hf_compress.assets as assets

    calls = []

    def fake(name, split):
        calls.append((name, split))
        return [f"{name} {split} {i}" for i in range(5)]

    monkeypatch.setattr(assets, "asset_texts", fake)
    corpora = bench.heal_data.real_corpora(seed=0)
    assert sorted(calls) == sorted((n, s) for n in ("wiki-summaries", "python-docs") for s in ("calibration", "heldout"))
    assert sorted(corpora.train["python docs"]) == [f"python-docs calibration {i}" for i in range(5)]
    assert corpora.heldout["wiki"] == [f"wiki-summaries heldout {i}" for i in range(5)]  # held out: not shuffled


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "`steps` must be an integer >= 1, got 0"),
    ("layer_fraction", 1.0, "`layer_fraction` must be strictly between 0 and 1, got 1.0"),
    ("learning_rate", float("nan"), "`learning_rate` must be a finite number > 0, got nan"),
    ("compressions", "layers,depth", "`compressions` must be a comma-separated subset of"),
    ("device", "tpu", "`device` must be 'cpu' or 'cuda', got 'tpu'"),
    ("w8a8", "gptq", "`w8a8` must be 'smoothquant+gptq' or 'rtn', got 'gptq'"),
    ("finetune", "width", "`finetune` must be 'all', 'none' or a subset of compressions (layers,heads), got"),
    ("bf16", "yes", "`bf16` must be true, false or null"),
    ("alpha_task", -1.0, "`alpha_task` must be a finite number >= 0, got -1.0"),
])
def test_bad_settings_name_the_field(bench, field, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        dataclasses.replace(bench.PRESETS["tiny"], **{field: value})


def test_presets_and_output_paths(bench, tmp_path):
    published = SCRIPTS.parent / "benchmarks" / "heal.md"
    for argv, preset in ((["--tiny"], "tiny"), (["--quick"], "quick"), ([], "full"), (["--device", "cuda"], "gpu"),
                         (["--preset", "cpu"], "cpu"), (["--preset", "gpu"], "gpu")):
        args = bench.parse_args(argv)
        settings = bench.make_settings(args)
        assert settings.preset == preset
        out = bench.output_path(args, settings)
        assert (out == published) == (preset in ("full", "gpu", "cpu"))
    for argv in (["--quick"], ["--tiny"]):  # a smoke run never writes the published table, even by name
        args = bench.parse_args([*argv, "--output", str(published)])
        with pytest.raises(SystemExit, match="`--output` must not be the published table"):
            bench.output_path(args, bench.make_settings(args))
    with pytest.raises(SystemExit):
        bench.parse_args(["--preset", "cpu", "--device", "cuda"])
    gpu = bench.make_settings(bench.parse_args(["--device", "cuda"]))
    assert gpu.device == "cuda" and gpu.bf16 and gpu.tokens > 10 * bench.PRESETS["full"].tokens
    args = bench.parse_args(["--quick", "--output", str(tmp_path / "x.md")])
    assert bench.output_path(args, bench.make_settings(args)) == tmp_path / "x.md"
    with pytest.raises(SystemExit, match="unknown field 'stepz'"):
        bench.make_settings(bench.parse_args(["--tiny", "--set", "stepz=3"]))


def test_bf16_only_where_it_is_native(bench, monkeypatch):
    import hf_compress.evaluation as evaluation

    for native in (False, True):
        monkeypatch.setattr(evaluation, "native_bf16_cpu", lambda native=native: native)
        for argv in ([], ["--preset", "cpu"]):
            assert bench.make_settings(bench.parse_args(argv)).bf16 is native  # fp32 on an AVX2-only CPU
        assert bench.make_settings(bench.parse_args(["--device", "cuda"])).bf16 is True
        assert bench.make_settings(bench.parse_args(["--set", "bf16=true"])).bf16 is True  # asked: kept
        assert bench.make_settings(bench.parse_args(["--tiny"])).bf16 is False


def test_width_at_the_parameters_of_the_dropped_layers_and_the_width_verdict(bench, tmp_path):
    from hf_compress import arch

    settings = dataclasses.replace(bench.PRESETS["tiny"], steps=2, compressions="layers,width",
                                         finetune="layers", quantize=False)
    rows, notes, _ = bench.run(settings, tiny=True)
    assert [(r["compression"], r["model"]) for r in rows] == [
        ("-", "original"), ("layers", "pruned (layers [6, 7] of 8 dropped)"), ("layers", "healed: distillation"),
        ("layers", "healed: LM fine-tuning (no teacher)"),
        ("width", "pruned (FFN 128→80 neurons by activation importance, the block parameters of 2 of 8 layers "
                  "dropped)"), ("width", "healed: distillation")]
    teacher, depth, width = rows[0]["module"], rows[1]["module"], rows[4]["module"]
    blocks = {k: sum(p.numel() for p in arch.get_layers(m).parameters()) for k, m in
              (("t", teacher), ("d", depth), ("w", width))}
    per_neuron = 3 * arch.hidden_size(teacher) * arch.num_layers(teacher)  # gate, up, down rows / columns
    assert arch.num_layers(depth) == 6 and arch.intermediate_size(width) % 8 == 0
    assert abs(blocks["w"] - blocks["d"]) <= 4 * per_neuron  # equal block parameters up to rounding to 8
    assert rows[5]["tokens"] == rows[2]["tokens"]  # the same distillation budget
    text = bench.heal_table.render(rows, notes, settings, "tiny", dict(
        started="now", load_before=(0, 0, 0), load_after=(0, 0, 0), wall_s=1, threads=1, command="x"))
    assert "width vs depth after the same distillation" in text
    assert text.count("distillation recovered") == 2 and text.count("LM fine-tuning on both") == 1
    mixed = dataclasses.replace(settings, alpha_task=0.5).distill_label  # a mixed-loss run's rows: same verdict
    relabelled = [dict(r, model=mixed) if r["model"] == "healed: distillation" else r for r in rows]
    assert "width vs depth after the same distillation + 0.5 × LM loss" in "\n".join(
        bench.heal_table.verdicts(relabelled))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_device_is_refused_before_loading(bench, monkeypatch):
    monkeypatch.setattr(bench, "run", lambda *a: pytest.fail("nothing may be loaded"))
    with pytest.raises(SystemExit, match="`device` cuda was asked but torch sees no CUDA device"):
        bench.main(["--tiny", "--device", "cuda"])


def _ctx(command="x"):
    return dict(started="now", load_before=(0, 0, 0), load_after=(0, 0, 0), wall_s=1, threads=1, command=command)


def test_arms_split_over_two_processes_merge_into_the_one_process_table(bench, tmp_path):
    """A distillation-only run (teacher cache in a kept folder, built by --cache-only) and a fine-tuning-only
    run, merged, give the same models and numbers as one run of both arms."""
    base = dataclasses.replace(bench.PRESETS["tiny"], steps=2, compressions="layers", finetune="layers",
                               quantize=False)
    cache = tmp_path / "cache"
    assert bench.main(["--tiny", "--cache-only", "--set", "steps=2", "--set", f"cache_dir={cache}"]) == 0
    from hf_compress.distillation.cache_format import META_FILE

    meta = json.loads((cache / META_FILE).read_text())
    assert meta["complete"] is True
    both, _, _ = bench.run(base, tiny=True)
    kd_run = bench.run(dataclasses.replace(base, finetune="none", cache_dir=str(cache)), tiny=True)
    written = json.loads((cache / bench.heal_data.COST_FILE).read_text())
    note = next(n for n in kd_run[1] if n.startswith("teacher cache"))
    assert "by `--cache-only`, reused here" in note and f"{written['cache_cpu_s'] / 60:.1f} CPU-min" in note
    (cache / bench.heal_data.COST_FILE).unlink()  # kept from before the record: its cost is unknown, not the check's
    again = bench.run(dataclasses.replace(base, finetune="none", cache_dir=str(cache)), tiny=True)
    assert "at a cost not recorded" in next(n for n in again[1] if n.startswith("teacher cache"))
    assert not (cache / bench.heal_data.COST_FILE).exists()
    ft_run = bench.run(dataclasses.replace(base, distill=False), tiny=True)
    assert [r["model"] for r in ft_run[0]][-1] == "healed: LM fine-tuning (no teacher)"
    assert not any(r["model"] == "healed: distillation" for r in ft_run[0])
    paths = []
    for name, (rows, notes, model) in (("kd", kd_run), ("ft", ft_run)):
        for r in rows:  # the sizes measure_sizes writes (the JSON of a real run has them)
            r.update(params=1, bytes=1, latency_ratio=1.0)
        paths.append(str(tmp_path / f"{name}.json"))
        bench.heal_table.dump_run(paths[-1], rows, notes, dataclasses.replace(base, distill=name == "kd"),
                                  model, _ctx(name))
    rows, notes, settings, _, context = bench.heal_table.merge_runs(paths)
    assert [(r["compression"], r["model"]) for r in rows] == [(r["compression"], r["model"]) for r in both]
    for merged, single in zip(rows, both):  # same models: same perplexities (deterministic pruning and training)
        for corpus, value in single["ppl"].items():
            assert math.isclose(merged["ppl"][corpus], value, rel_tol=1e-5), (merged["model"], corpus)
    assert context["command"] == "kd + ft" and settings.distill is True
    text = bench.heal_table.render(rows, notes, settings, "tiny", context)
    assert "LM fine-tuning on both held-out corpora" in text and "merged from 2 processes" in text


def test_merge_refuses_runs_of_another_budget_and_fine_tuning_only_needs_an_arm(bench, tmp_path):
    rows = [dict(compression="-", model="original", ppl={"a": 2.0})]
    paths = []
    for steps in (2, 3):
        paths.append(str(tmp_path / f"{steps}.json"))
        bench.heal_table.dump_run(paths[-1], rows, [], dataclasses.replace(bench.PRESETS["tiny"], steps=steps),
                                  "tiny", _ctx())
    with pytest.raises(ValueError, match="must share the model and budget.*differing in steps"):
        bench.heal_table.merge_runs(paths)
    with pytest.raises(SystemExit, match="`distill` must be true or false, and with distill false `finetune`"):
        bench.main(["--tiny", "--set", "distill=false", "--set", "finetune=none"])
    with pytest.raises(SystemExit, match="--cache-only needs a folder"):
        bench.main(["--tiny", "--cache-only"])
