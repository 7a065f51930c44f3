"""scripts/bench_snli.py end to end on its --tiny setup (tiny in-process BERT, synthetic pairs, offline)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_snli.py"
ROWS = [
    "teacher (tiny-bert)",
    "student: no teacher (base init)",
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
    layers, params, nbytes, latency, acc, pct, pairs, steps, cpu_min, train_s, steps_s = zip(*table.values())
    teacher_acc = acc[0]
    assert layers[:6] == (4, 3, 3, 3, 3, 3)
    for i in range(6):  # measured rows: every column filled, % of teacher is the accuracy ratio
        assert latency[i] > 0 and 0 <= acc[i] <= 100
        assert pct[i] == pytest.approx(100 * acc[i] / teacher_acc, abs=0.06)
    for i in range(5):
        assert train_s[i] >= 0 and cpu_min[i] >= 0 and steps_s[i] > 0
    assert pct[0] == 100.0
    assert params[1] == params[2] == params[3] == params[4] == params[5] < params[0]  # int8 keeps the count
    assert nbytes[1] == nbytes[2] == nbytes[3] == nbytes[4] < nbytes[0]
    assert nbytes[5] < 0.5 * nbytes[4]  # int8 weights on disk
    # every student: the same pairs (more than the teacher's) and the same steps
    assert pairs[0] == 96 and set(pairs[1:5]) == {192} and set(steps[1:5]) == {6}
    assert steps_s[5] is None
    assert all(v is None for v in table[ROWS[6]])  # TRL cannot take a classifier: explained, not measured
    assert "TRL row not measured:" in text
    assert "trained from the teacher's logits over its 192 pairs, cached once" in text
    assert "teacher layers 0, 2, 3 (the base-init student: those layers of the pre-trained" in text  # 3 of 4


def test_students_are_reused_from_their_cache(bench, tiny_run, tmp_path, monkeypatch):
    text, cache = tiny_run

    def must_not_train(*a, **k):
        raise AssertionError("the cached students should have been reused")

    monkeypatch.setattr(bench.snli_train, "train_student", must_not_train)
    out = tmp_path / "again.md"
    # trained in another order: the students' cache key leaves `students` out, the table keeps its order
    assert bench.main(["--tiny", "--cache-dir", str(cache), "--output", str(out), "--set",
                       "students=logits + hidden,no teacher,logits", "--skip-trl", "--skip-int8"]) == 0
    again, first = _table(out.read_text()), _table(text)
    assert list(again) == [ROWS[0]] + ROWS[2:5] and "int8 row left out (--skip-int8)" in out.read_text()
    for row in [ROWS[0]] + ROWS[2:5]:  # same accuracy, pairs, steps and training times (from the cache)
        assert again[row][4:] == first[row][4:]


def _tiny_parts(bench, cache_dir, **overrides):
    settings = bench.dataclasses.replace(bench.PRESETS["tiny"], **overrides)
    train, _, tokenizer, init_teacher, name = bench.snli_data.tiny_setup(settings, settings.pairs)
    train_tok = bench.snli_data.tokenize(train, tokenizer, settings.max_length)
    teacher, folder, _ = bench.snli_train.get_teacher(settings, train_tok.select(range(settings.train_size)), tokenizer,
                                           init_teacher, name, cache_dir)
    return settings, teacher, folder, train_tok.select(range(settings.pairs)), tokenizer  # as main() does


def test_logits_student_from_the_cache_equals_the_live_teacher(bench, tiny_run, tmp_path):
    settings, teacher, folder, train_tok, tokenizer = _tiny_parts(bench, tiny_run[1])
    cache_folder, _ = bench.snli_train.teacher_logits(teacher, folder, settings, train_tok, tokenizer)
    cached, s1 = bench.snli_train.train_student("logits", teacher, settings, train_tok, tokenizer, tmp_path / "a", cache_folder)
    live, s2 = bench.snli_train.train_student("logits", teacher, settings, train_tok, tokenizer, tmp_path / "b", None)
    assert (s1["teacher_source"], s2["teacher_source"]) == ("cache", "live") and s1["steps"] == s2["steps"] == 6
    live_state = live.state_dict()
    for key, value in cached.state_dict().items():
        if key.endswith("attention.self.key.bias"):  # its true gradient is 0 (softmax shift): Adam scales noise
            continue
        torch.testing.assert_close(value, live_state[key], rtol=1e-4, atol=1e-5, msg=key)
    moved = [k for k, v in cached.state_dict().items() if not torch.equal(v, teacher.state_dict().get(k, v))]
    assert moved  # it did train


def test_student_keep_picks_those_teacher_layers(bench, tiny_run, tmp_path):
    settings, teacher, _, train_tok, tokenizer = _tiny_parts(bench, tiny_run[1], student_keep="0,1,3",
                                                             student_steps=1, student_lr=1e-12)
    student, _ = bench.snli_train.train_student("no teacher", teacher, settings, train_tok, tokenizer, tmp_path, None)
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for s_i, t_i in enumerate((0, 1, 3)):
        torch.testing.assert_close(s_layers[s_i].output.dense.weight, t_layers[t_i].output.dense.weight,
                                   rtol=0, atol=1e-9)


def test_bf16_defaults_to_the_cpu_and_enters_the_keys(bench, monkeypatch):
    base = bench.PRESETS["full"]
    assert base.bf16_training is None
    monkeypatch.setattr(bench, "native_bf16_cpu", lambda: False)
    key, skey, head = base.teacher_key("m"), base.student_key("logits", "m"), bench.header(
        base, "m", 10, [], 1.0, 1.0, (0.0, 0.0))
    assert base.bf16 is False and "training precision: fp32 (this CPU" in head and "no native bf16" in head
    monkeypatch.setattr(bench, "native_bf16_cpu", lambda: True)
    assert base.bf16 is True and base.teacher_key("m") != key and base.student_key("logits", "m") != skey
    assert "training precision: bf16 autocast (this CPU has native bf16)" in bench.header(
        base, "m", 10, [], 1.0, 1.0, (0.0, 0.0))
    off = bench.dataclasses.replace(base, bf16_training=False)
    assert off.bf16 is False and off.teacher_key("m") == key  # explicit False = what auto chose on AVX2


def test_set_parses_auto_strings_and_refuses_bad_values(bench):
    args = bench.parse_args(["--tiny", "--set", "bf16_training=auto", "--set", "student_keep=1,2,3",
                             "--set", "students=no teacher,logits"])
    settings = bench.make_settings(args)
    assert settings.bf16_training is None and settings.keep == [1, 2, 3]
    assert settings.student_kinds == ["no teacher", "logits"]
    with pytest.raises(SystemExit, match="student_keep"):
        bench.make_settings(bench.parse_args(["--tiny", "--set", "student_keep=3,1,2"]))


def test_teacher_is_reused_from_cache(bench, tiny_run):
    _, cache = tiny_run
    settings = bench.PRESETS["tiny"]
    train, _, tokenizer, _, name = bench.snli_data.tiny_setup(settings, settings.train_size)
    train_tok = bench.snli_data.tokenize(train, tokenizer, settings.max_length)

    def must_not_train():
        raise AssertionError("the cached teacher should have been reused")

    teacher, folder, stats = bench.snli_train.get_teacher(settings, train_tok, tokenizer, must_not_train, name, cache)
    assert folder.name == f"snli-teacher-{settings.teacher_key(name)}" and stats["steps"] > 0
    assert teacher.config.num_labels == 3
    # the teacher's test predictions are stored beside it and give the accuracy the table shows
    (stored,) = bench.json.loads((folder / "test_predictions.json").read_text()).values()
    test = bench.snli_data.tiny_setup(settings, settings.train_size)[1]
    acc = sum(p == y for p, y in zip(stored, test["label"])) / len(stored)
    assert _table(tiny_run[0])[ROWS[0]][4] == pytest.approx(100 * acc, abs=0.006)


def test_teacher_key_tracks_teacher_settings_only(bench):
    base = bench.PRESETS["quick"]
    key = base.teacher_key("m")
    assert bench.dataclasses.replace(base, student_steps=7, temperature=5.0).teacher_key("m") == key
    assert bench.dataclasses.replace(base, teacher_lr=1e-4).teacher_key("m") != key
    assert base.teacher_key("other") != key


@pytest.mark.parametrize("field, value", [
    ("temperature", 0), ("batch_size", 0), ("test_size", 0), ("student_pairs", 0), ("student_lr", float("nan")),
    ("alpha_logits", -1.0), ("students", "logits,teacher"), ("students", ""), ("student_keep", "0,1"),
    ("student_keep", "a,b,c"), ("student_epochs", float("inf")), ("student_labels", 0),
    ("student_labels", 193)])
def test_bad_settings_name_the_field(bench, field, value):
    with pytest.raises(ValueError, match=re.escape(f"`{field}` must be")):
        bench.dataclasses.replace(bench.PRESETS["tiny"], **{field: value})


def test_base_init_student_starts_from_the_pretrained_layers(bench, tiny_run, tmp_path):
    settings, teacher, _, train_tok, tokenizer = _tiny_parts(bench, tiny_run[1], student_steps=1, student_lr=1e-12)
    base = bench.snli_data.tiny_setup(settings, 8)[3]
    student, stats = bench.snli_train.train_student("no teacher (base init)", teacher, settings, train_tok,
                                                    tokenizer, tmp_path, None, base=base)
    pre, fine = base().bert.encoder.layer, teacher.bert.encoder.layer
    for s_i, t_i in enumerate((0, 2, 3)):
        got = student.bert.encoder.layer[s_i].output.dense.weight
        torch.testing.assert_close(got, pre[t_i].output.dense.weight, rtol=0, atol=1e-9)
        assert not torch.allclose(got, fine[t_i].output.dense.weight)  # not the fine-tuned teacher's
    assert stats["teacher_source"] is None
    with pytest.raises(ValueError, match="needs `base`"):
        bench.snli_train.train_student("no teacher (base init)", teacher, settings, train_tok, tokenizer,
                                       tmp_path / "b", None)


@pytest.mark.parametrize("b, c, expected", [(0, 0, 1.0), (10, 0, 2 / 1024), (0, 10, 2 / 1024), (5, 5, 1.0),
                                            (3, 1, 0.625)])
def test_mcnemar_exact_p(bench, b, c, expected):
    assert bench.snli_table.mcnemar_p(b, c) == pytest.approx(expected)


def test_paired_notes_count_the_discordant_pairs(bench):
    labels = [0, 1, 2, 0, 1, 2]
    preds = {"a": [0, 1, 2, 0, 0, 0], "b": [0, 0, 0, 0, 1, 0]}  # a right on 4, b on 3; a-only 2, b-only 1
    (note,) = bench.snli_table.paired_notes(preds, labels, ["a"], ["b"])
    assert note.startswith("paired: a vs b: +16.67 points on the same 6 test pairs")
    assert "wrong on 2, the reverse on 1" in note and "p = 1" in note


def test_tiny_table_has_the_paired_comparisons(tiny_run):
    text = tiny_run[0]
    for a in ("logits + hidden", "logits"):
        for b in ("no teacher (base init)", "no teacher"):
            assert f"- paired: student: {a} vs student: {b}: " in text


def test_unlabelled_pairs_reach_the_distilled_students_only(bench, tiny_run, tmp_path, monkeypatch):
    seen = {}
    real = bench.snli_train.train_student

    def spy(kind, teacher, settings, data, *a, **k):
        seen[kind] = list(data["label"])
        return real(kind, teacher, settings, data, *a, **k)

    monkeypatch.setattr(bench.snli_train, "train_student", spy)
    out = tmp_path / "unlabelled.md"
    assert bench.main(["--tiny", "--cache-dir", str(tiny_run[1]), "--output", str(out), "--skip-trl",
                       "--skip-int8", "--set", "student_labels=96", "--set", "students=no teacher,logits"]) == 0
    assert len(seen["no teacher"]) == 96 and -100 not in seen["no teacher"]
    assert len(seen["logits"]) == 192 and seen["logits"][96:] == [-100] * 96
    assert seen["logits"][:96] == seen["no teacher"]
    table = _table(out.read_text())
    assert table["student: no teacher"][6] == 96 and table["student: logits"][6] == 192  # training pairs
    assert "the other 96 are unlabelled text" in out.read_text()
    base = bench.PRESETS["full"]  # unlabelled pairs make other students: another cache key
    assert base.student_key("logits", "m") != bench.dataclasses.replace(base, student_labels=64_000).student_key(
        "logits", "m")
