"""Issue 15 items 6, 13, 15, 16, 17, 21 (schema part): what `validate` must refuse, in one line with exit 2,
before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hf_compress.cli import main

TINY = Path(__file__).resolve().parents[2] / "recipes" / "tiny.yaml"


def _validate(capsys, path, *sets) -> tuple[int, str]:
    argv = ["validate", str(path)] + [a for s in sets for a in ("--set", s)]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _anchor_bomb(levels: int) -> str:
    lines = ["version: 1", "output_dir: out", "model:", "  config:", "    model_type: bert", "    a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"    a{i}: &a{i} [*a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}, *a{i-1}]")
    return "\n".join(lines) + "\n"


def test_an_anchor_bomb_is_refused_by_validate(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_anchor_bomb(9))  # 10**9 values once expanded
    code, err = _validate(capsys, path)
    assert code == 2 and "expands to more than" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("content, needle", [
    (b"\xff\xfe\x00binary\x00\x9c", "UTF-8"),
    (("a: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested"),
    (b"model: bert\nmodel: gpt2\noutput_dir: x\n", "duplicate key `model`"),
])
def test_binary_deep_or_duplicate_key_recipes_are_one_line_exit_2(content, needle, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    code, err = _validate(capsys, path)
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("override, needle", [
    ("eval_samples=0", "eval_samples"), ("eval_samples=-5", "eval_samples"),
    ("eval_max_length=0", "eval_max_length"), ("seed=-1", "seed"), ("seed=100000000000000000000000", "seed"),
    ("model.config.vocab_size=0", "vocab_size"), ("model.config.hidden_size=1000000000000", "memory"),
    ("model.config.model_type=t5", "t5"), ("model.config.model_type=nope_" + "x" * 5000, "supported"),
    ("stages=[{student_from_teacher: {num_layers: 2}}, {distill: {alpha_hidden: 1, max_length: 100000000000000000000}}]",
     "max_length"),
])
def test_values_that_would_crash_later_are_refused_by_validate(override, needle, capsys):
    code, err = _validate(capsys, TINY, override)
    assert code == 2, err
    assert needle in err and len(err) < 400 and len(err.splitlines()) == 1, err


def test_duplicate_keys_inside_model_config_are_refused(tmp_path, capsys):
    raw = TINY.read_text().replace("model_type: bert,", "model_type: bert, hidden_size: 16,")
    path = tmp_path / "dup.yaml"
    path.write_text(raw)
    code, err = _validate(capsys, path)
    assert code == 2 and "duplicate key `hidden_size`" in err


def test_the_bundled_recipes_still_validate(capsys):
    for path in sorted(TINY.parent.glob("*.yaml")):
        assert yaml.safe_load(path.read_text())
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("stages, needle", [
    ("stages=[{student_from_teacher: {keep: [0, 7]}}]", "stages[0].student_from_teacher: `keep` holds layer 7"),
    ("stages=[{student_from_teacher: {num_layers: 99}}]", "got 99"),
    ("stages=[{drop_layers: {layers: [0, 7]}}]", "stages[0].drop_layers: `indices` holds layer 7"),
])
def test_recipe_given_layer_errors_exit_2_at_run(stages, needle, texts_path, tmp_path, capsys):
    code = main(["run", str(TINY), "--set", stages, "--set", f"data.name={texts_path}", "--set", "evaluate=[size]",
                 "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and needle in err, err
    assert not (tmp_path / "out").exists()
