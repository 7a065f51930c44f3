"""The time budget (``minutes``) covers every phase, sizing included; whatever the budget, the base shape and
the smallest candidates are sized and measured; and when nothing could be scored in time the best-sized
candidate is returned (and written by ``hf-compress auto``, exit 3) marked not measured instead of an error.
A fake clock that jumps 30 s at every reading runs past the budget without waiting."""

from __future__ import annotations

import itertools

import pytest
from planner_helpers import fake_latency, texts, tiny_bert

from hf_compress.cli import main
from hf_compress.planner import phases, plan_compression
from hf_compress.planner.search_steps import NOT_MEASURED
from hf_compress.recipe.loading import char_tokenizer

TOK = char_tokenizer()
SPACE = {"keep": (1.0, 0.75, 0.5), "heads": (0.0, 0.5), "ffn": (0.0, 0.5), "int8": (None, "w8a8")}


@pytest.fixture
def racing_clock(monkeypatch):
    ticks = itertools.count(0.0, 30.0)
    monkeypatch.setattr(phases, "clock", lambda: next(ticks))


def run(target: str, **kwargs):
    return plan_compression(tiny_bert(), texts(), tokenizer=TOK, target=target, space=SPACE, heal_steps=1,
                            distill_steps=1, max_length=32, latency_fn=fake_latency, progress=False, **kwargs)


def test_sizing_counts_against_the_budget_and_the_ends_are_always_measured(racing_clock):
    p = run("speedup=1.6", minutes=1.0)
    rows = {r["key"]: r for r in p.rows}
    assert sum(r.get("status") == "not sized (time budget)" for r in rows.values()) > len(rows) // 2
    base, smallest = rows["L4-h0-f0-fp32"], rows["L2-h0.5-f0.5-fp32"]
    for row in (base, smallest):
        assert row["params"] > 0 and row["latency_source"] == "measured", row
    assert rows["L4-h0-f0-w8a8"]["latency_source"] == "measured"  # the int8 gain on the base shape
    measured = [r for r in rows.values() if r.get("latency_source") == "measured" and r["int8"] is None]
    assert {r["key"] for r in measured} == {"L4-h0-f0-fp32", "L2-h0.5-f0.5-fp32"}  # smallest sized: ALWAYS=2
    assert any("not measured within the 1-minute budget" in n for n in p.notes)
    assert "the base shape timed against itself measured 1.00× (exact: 1.00×): read every measured speed-up to " \
           "about ±0%" in p.notes


def test_nothing_scored_in_time_returns_the_best_sized_candidate_marked_not_measured(racing_clock):
    p = run("speedup=1.6", minutes=1.0)
    assert not p.met and p.stages
    assert p.message.startswith("no candidate could be scored for target speedup=1.6 within the 1-minute budget")
    assert "not measured" in p.message and "quality is unknown" in p.message and "\n" not in p.message
    assert p.predicted["status"] == NOT_MEASURED and p.predicted["proxy"] is None
    meeting = [r["speedup"] for r in p.rows if r.get("speedup", 0) >= 1.6]  # measured (or int8: estimated)
    assert len(meeting) >= 2 and p.predicted["speedup"] == min(meeting)  # the closest to the target


def test_params_target_out_of_time_is_the_smallest_meeting_it_by_exact_size(racing_clock):
    p = run("params=0.9", minutes=1.0)
    assert not p.met and p.predicted["status"] == NOT_MEASURED
    assert p.predicted["params_ratio"] <= 0.9 and "params" in p.message


def test_auto_out_of_time_writes_the_best_sized_candidate_and_exits_3(racing_clock, tmp_path, capsys):
    folder, data = tmp_path / "tiny-bert", tmp_path / "texts.txt"
    tiny_bert().save_pretrained(folder)
    TOK.save_pretrained(folder)
    data.write_text("\n".join(texts(80)))
    out = tmp_path / "out"
    code = main(["auto", str(folder), "--data", str(data), "--target", "params=0.7", "--output-dir", str(out),
                 "--minutes", "1", "--heal-steps", "1", "--distill-steps", "1", "--top-k", "1",
                 "--eval-samples", "8", "--eval-max-length", "32"])
    err = capsys.readouterr().err
    assert code == 3
    assert "target missed: no candidate could be scored" in err and "not measured" in err and str(out) in err
    assert (out / "model.safetensors").is_file() and "not measured" in (out / "README.md").read_text()


def test_the_phases_share_the_budget():
    assert phases.deadlines(100.0, 10) == {"measure": 100.0 + 330.0, "proxy": 100.0 + 540.0}
    assert phases.deadlines(0.0, None) == {"measure": float("inf"), "proxy": float("inf")}
