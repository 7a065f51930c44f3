"""hf-compress driven in-process through ``main([...])``: every command, every exit status,
one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from hf_compress.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "recipes" / "tiny.yaml"
COMMANDS = ["run", "validate", "inspect", "bench", "env"]

GOOD = {
    "model": {
        "config": {
            "model_type": "bert",
            "vocab_size": 100,
            "hidden_size": 32,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "intermediate_size": 64,
            "max_position_embeddings": 64,
        }
    },
    "task": "feature-extraction",
    "output_dir": "out",
    "data": {"name": "wiki-summaries"},
    "stages": [{"student_from_teacher": {"num_layers": 2}}, {"distill": {"alpha_hidden": 1.0}}],
}


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    words = (
        "the a model small fast layer head weight quantized distilled text city river music science".split()
    )
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (12,), generator=g)) for _ in range(80)
    ]
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_cli(argv) -> tuple[int, str]:
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(argv)
    return code, buf.getvalue()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, texts_file):
    """One successful `hf-compress run recipes/tiny.yaml` shared by the tests that read its output."""
    out = tmp_path_factory.mktemp("run") / "tiny-out"
    code, stdout = _run_cli(["run", str(TINY), "--set", f"data.name={texts_file}", "--output-dir", str(out)])
    return code, out, stdout


@pytest.fixture(scope="module")
def int8_run(tmp_path_factory, texts_file):
    """tiny.yaml plus head pruning (BERT: remote-code checkpoint) and W8A8 int8."""
    out = tmp_path_factory.mktemp("run") / "int8-out"
    stages = (
        "stages=[{student_from_teacher: {num_layers: 2}}, {prune_heads: {fraction: 0.5, num_batches: 2}}, "
        "{quantize_int8: {mode: w8a8}}]"
    )
    code, _ = _run_cli(
        [
            "run",
            str(TINY),
            "--set",
            f"data.name={texts_file}",
            "--set",
            stages,
            "--set",
            "evaluate=[size]",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    return out


def _write(tmp_path, raw, name="r.yaml") -> str:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return str(path)


@pytest.mark.parametrize("command", [None] + COMMANDS)
def test_help_for_every_command_exits_0(command, capsys):
    argv = ["--help"] if command is None else [command, "--help"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: hf-compress") and (command is None or command in out.splitlines()[0])


@pytest.mark.parametrize("argv", [[], ["bogus"], ["run"], ["bench", "x", "--samples", "many"]])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "usage:" in capsys.readouterr().err


def _with(**changes):
    raw = json.loads(json.dumps(GOOD))
    for key, value in changes.items():
        raw[key] = value
    return raw


MALFORMED = [
    (_with(taks="x"), "taks: unknown key `taks`; did you mean `task`?"),
    (
        _with(stages=[{"student_from_teacher": {"num_layer": 2}}]),
        "stages[0].student_from_teacher.num_layer: unknown key `num_layer`; did you mean `num_layers`?",
    ),
    (
        _with(stages=[{"prune_head": {}}]),
        "stages[0]: unknown stage `prune_head`; did you mean `prune_heads`?",
    ),
    (
        _with(stages=[{"student_from_teacher": {"num_layers": "two"}}]),
        "stages[0].student_from_teacher.num_layers: must be int or null, got str 'two'",
    ),
    (
        _with(stages=[{"quantize_int8": {}}, {"distill": {"alpha_hidden": 1.0}}]),
        "stages[1].distill: nothing may follow quantize_int8",
    ),
    (
        _with(stages=[{"prune_heads": {}}, {"student_from_teacher": {"num_layers": 2}}]),
        "stages[1].student_from_teacher: student_from_teacher must be the first stage",
    ),
    (
        _with(stages=[{"prune_heads": {"fraction": 1.5}}]),
        "stages[0].prune_heads: `fraction` must be a number in [0, 1), got 1.5",
    ),
    (_with(task="summarization"), "task: must be one of feature-extraction"),
    (_with(evaluate=["size", "latncy"]), "evaluate[1]: unknown metric `latncy`; did you mean `latency`?"),
    (_with(data=None), "stages[1].distill: this stage needs texts"),
    (
        _with(stages=[{"student_from_teacher": {"num_layers": 2}}, {"distill": {"max_steps": 5}}]),
        "stages[1].distill.alpha_hidden: a feature-extraction model is distilled on hidden states",
    ),
    (_with(model="not a model!"), "model: `name_or_path` must be a bundled asset"),
    (_with(version=2), "version: only recipe version 1 exists, got 2"),
    (_with(stages={"distill": {}}), "stages: must be a list"),
    ({"model": "minilm"}, "missing required key `output_dir`"),
    (["model", "minilm"], "a recipe must be a mapping at the top level, got list"),
    ("model: [unclosed\n", "not valid YAML at line"),
]


@pytest.mark.parametrize("raw, expected", MALFORMED, ids=[m[1][:40] for m in MALFORMED])
def test_malformed_recipes_exit_2_with_one_line_naming_the_problem(raw, expected, tmp_path, capsys):
    path = _write(tmp_path, raw)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("hf-compress validate: error: ") and expected in err
    assert main(["run", path]) == 2  # run checks the same way, before loading anything
    assert not (tmp_path / "out").exists()


def test_validate_and_dry_run_accept_overrides_and_load_nothing(tmp_path, capsys):
    path = _write(tmp_path, GOOD)
    assert main(["validate", path]) == 0
    assert "student_from_teacher -> distill" in capsys.readouterr().out
    assert (
        main(
            [
                "run",
                path,
                "--dry-run",
                "--set",
                "stages.1.distill.max_steps=3",
                "--output-dir",
                str(tmp_path / "elsewhere"),
            ]
        )
        == 0
    )
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["stages"][1]["distill"]["max_steps"] == 3 and resolved["output_dir"] == str(
        tmp_path / "elsewhere"
    )
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()
    assert main(["validate", path, "--set", "stages.1.distill.max_stepz=3"]) == 2
    assert "did you mean `max_steps`" in capsys.readouterr().err


def test_missing_recipe_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_run_writes_a_complete_folder_and_prints_the_card_table(tiny_run):
    code, out, stdout = tiny_run
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "compression_config.json",
        "recipe.yaml",
        "report.png",
    } <= names
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folder left behind
    card = (out / "README.md").read_text()
    table = stdout.strip()
    assert table.startswith("| model |") and table in card
    cc = json.loads((out / "compression_config.json").read_text())
    assert [s["stage"] for s in cc["stages"]] == ["student_from_teacher"]
    assert cc["stages"][0]["layers_before"] == 4 and cc["stages"][0]["layers_after"] == 2
    assert cc["recipe"]["output_dir"] == str(out) and "transformers" in cc["versions"]
    assert yaml.safe_load((out / "recipe.yaml").read_text()) == cc["recipe"]
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_outputs_reload_in_a_fresh_process(tiny_run, int8_run):
    """A plain output loads with stock transformers without hf_compress; the int8 + pruned-heads output loads
    (trust_remote_code, then `import hf_compress` for the int8 loader) to the same function as in memory.
    Both checks share one subprocess (a transformers import costs seconds)."""
    from hf_compress.io.checkpoint import load_compressed
    from hf_compress.recipe.loading import load_model
    from hf_compress.recipe.schema import load_recipe
    from hf_compress.methods.layers.drop import student_from_teacher

    _, out, _ = tiny_run
    ids = [[2, 7, 9, 11, 13, 3]]
    base, _, _ = load_model(load_recipe(TINY).model, "feature-extraction", seed=0)
    with torch.inference_mode():
        expected = student_from_teacher(base, num_layers=2)(input_ids=torch.tensor(ids)).last_hidden_state
        expected_int8 = load_compressed(int8_run, trust_remote_code=True)(input_ids=torch.tensor(ids))
    code = (
        "import sys, torch, transformers\n"
        "def run(path, **kw):\n"
        "    m = transformers.AutoModel.from_pretrained(path, **kw).eval()\n"
        f"    return m, m(input_ids=torch.tensor({ids})).last_hidden_state.tolist()\n"
        "_, plain = run(sys.argv[1]); print(repr(plain)); print('hf_compress' in sys.modules)\n"
        "print(len(transformers.AutoTokenizer.from_pretrained(sys.argv[1])))\n"
        "import hf_compress\n"
        "m, q = run(sys.argv[2], trust_remote_code=True); print(repr(q))\n"
        "print(sum(type(x).__name__ == 'Int8Linear' for x in m.modules()))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(out), str(int8_run)],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain, imported, vocab, q, n_int8 = proc.stdout.strip().splitlines()[-5:]
    torch.testing.assert_close(torch.tensor(eval(plain)), expected, atol=1e-5, rtol=1e-5)
    assert imported == "False" and vocab == "52"
    torch.testing.assert_close(torch.tensor(eval(q)), expected_int8.last_hidden_state, atol=1e-5, rtol=1e-5)
    cc = json.loads((int8_run / "compression_config.json").read_text())
    assert int(n_int8) == cc["stages"][2]["int8_modules"] > 0


def test_json_output_and_runtime_failure_exit_1(tmp_path, texts_file, capsys):
    base = ["run", str(TINY), "--set", f"data.name={texts_file}", "--set", "evaluate=[size]"]
    assert main(base + ["--output-dir", str(tmp_path / "ok"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in data["rows"]] == ["base", "1. student_from_teacher"]
    assert data["rows"][1]["params"] < data["rows"][0]["params"]
    # 9 layers out of a 4-layer model: only knowable after loading, but the recipe's value -> exit 2, one line
    bad = base + [
        "--set",
        "stages.0.student_from_teacher.num_layers=9",
        "--output-dir",
        str(tmp_path / "bad"),
    ]
    assert main(bad) == 2
    err = capsys.readouterr().err
    assert (
        err.splitlines()[-1].startswith("hf-compress run: error: stages[0].student_from_teacher:")
        and "Traceback" not in err
    )
    assert not (tmp_path / "bad").exists()


def test_inspect_reports_layers_and_applied_compression(tiny_run, tmp_path, capsys):
    _, out, _ = tiny_run
    assert main(["inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 2 and info["heads"] == 4 and info["int8_modules"] == []
    assert [s["stage"] for s in info["compression"]["stages"]] == ["student_from_teacher"]
    from safetensors.torch import load_file

    assert info["parameters"] == sum(t.numel() for t in load_file(out / "model.safetensors").values())
    assert main(["inspect", str(out)]) == 0
    assert "layers: 2" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not a checkpoint folder" in capsys.readouterr().err


def test_bench_against_a_baseline_measures_both_side_by_side(tiny_run, texts_file, capsys):
    _, out, _ = tiny_run
    argv = [
        "bench",
        str(out),
        "--baseline",
        str(out),
        "--data",
        str(texts_file),
        "--samples",
        "8",
        "--repeats",
        "2",
        "--json",
    ]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["params"] == rows[1]["params"]
    assert rows[1]["embedding_cosine"] == pytest.approx(1.0, abs=1e-5)  # the same checkpoint twice
    assert main(["bench", "no-such-model"]) == 2


def test_bench_asks_before_running_code_shipped_in_a_folder(int8_run, texts_file, capsys):
    argv = ["bench", str(int8_run), "--data", str(texts_file), "--samples", "4", "--repeats", "1", "--json",
            "--eager-only"]  # the compiled row is tested in tests/ecosystem/test_int8_bench.py (slow)
    assert main(argv) == 2
    assert "pass trust_remote_code=True (--trust-remote-code)" in capsys.readouterr().err
    assert main(argv + ["--trust-remote-code"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["params"] > 0 and row["latency_ms"] > 0


def test_env_reports_versions(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["torch"] == torch.__version__ and "compressed_tensors" in info
