"""scripts/bench_snli.py end to end on its --tiny setup (tiny in-process BERT, synthetic pairs, offline)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_snli.py"
ROWS = [
    "teacher (tiny-bert)",
    "student: no teacher",
    "student: logits",
    "student: logits + hidden",
    "student: logits + hidden, int8 w8a8",
    "student: TRL distillation",
]


def _load_script():
    spec = importlib.util.spec_from_file_location("bench_snli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_snli"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    return _load_script()


@pytest.fixture(scope="module")
def tiny_run(bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("snli")
    out = root / "snli.md"
    assert bench.main(["--tiny", "--cache-dir", str(root / "cache"), "--output", str(out)]) == 0
    return out.read_text(), root / "cache"


def _num(cell: str):
    cell = cell.strip()
    return None if cell == "—" else float(cell.replace(",", ""))


def _table(text: str) -> dict[str, list]:
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    table = {}
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        table[cells[0]] = [_num(c) for c in cells[1:]]
    return table


def test_tiny_table_has_every_row_and_consistent_columns(tiny_run):
    text, _ = tiny_run
    table = _table(text)
    assert list(table) == ROWS
    layers, params, nbytes, latency, acc, pct, train_s, steps_s = zip(*table.values())
    teacher_acc = acc[0]
    assert layers[:5] == (4, 3, 3, 3, 3)
    for i in range(5):  # measured rows: every column filled, % of teacher is the accuracy ratio
        assert latency[i] > 0 and train_s[i] >= 0 and 0 <= acc[i] <= 100
        assert pct[i] == pytest.approx(100 * acc[i] / teacher_acc, abs=0.06)
    assert pct[0] == 100.0
    assert params[1] == params[2] == params[3] == params[4] < params[0]  # int8 keeps the weight count
    assert nbytes[1] == nbytes[2] == nbytes[3] < nbytes[0]
    assert nbytes[4] < 0.5 * nbytes[3]  # int8 weights on disk
    assert steps_s[1] > 0 and steps_s[4] is None
    assert all(v is None for v in table[ROWS[5]])  # TRL cannot take a classifier: explained, not measured
    assert "TRL row not measured:" in text


def test_teacher_is_reused_from_cache(bench, tiny_run):
    _, cache = tiny_run
    settings = bench.PRESETS["tiny"]
    train, _, tokenizer, _, name = bench._tiny_setup(settings)
    train_tok = bench.tokenize(train, tokenizer, settings.max_length)

    def must_not_train():
        raise AssertionError("the cached teacher should have been reused")

    teacher, folder, stats = bench.get_teacher(settings, train_tok, tokenizer, must_not_train, name, cache)
    assert folder.name == f"snli-teacher-{settings.teacher_key(name)}" and stats["steps"] > 0
    assert teacher.config.num_labels == 3
    # the teacher's test accuracy is stored beside it and is the one the table shows
    (stored,) = bench.json.loads((folder / "test_accuracy.json").read_text()).values()
    assert _table(tiny_run[0])[ROWS[0]][4] == pytest.approx(100 * stored, abs=0.006)


def test_teacher_key_tracks_teacher_settings_only(bench):
    base = bench.PRESETS["quick"]
    key = base.teacher_key("m")
    assert bench.dataclasses.replace(base, student_steps=7, temperature=5.0).teacher_key("m") == key
    assert bench.dataclasses.replace(base, teacher_lr=1e-4).teacher_key("m") != key
    assert base.teacher_key("other") != key


@pytest.mark.parametrize("field, value", [("temperature", 0), ("batch_size", 0), ("test_size", 0)])
def test_bad_settings_name_the_field(bench, field, value):
    with pytest.raises(ValueError, match=re.escape(f"`{field}` must be")):
        bench.dataclasses.replace(bench.PRESETS["tiny"], **{field: value})
