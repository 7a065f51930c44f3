"""scripts/bench_distill_speed.py --tiny: every part runs on tiny models and writes to a temporary path."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import bench_distill_speed  # noqa: E402


def test_tiny_run_writes_every_table_and_never_the_published_file(tmp_path):
    published = ROOT / "benchmarks" / "distill_speed.md"
    before = published.read_text() if published.exists() else None
    out = tmp_path / "speed.md"
    assert bench_distill_speed.main(["--tiny", "--steps", "2", "--batch", "4", "--output", str(out)]) == 0
    text = out.read_text()
    for heading in ("Seconds per optimizer step", "Top-k KL error", "Peak memory of one training step"):
        assert heading in text
    results = json.loads(out.with_suffix(".json").read_text())
    assert {r["pair"] for r in results["speed"]} == {"minilm", "smollm2"}
    assert all(len(r["arms"]["live"]["losses"]) == 3 for r in results["speed"])
    assert all(r["rel_error"] >= 0 for r in results["kl"]) and len(results["memory"]) == 4
    assert all(isinstance(r[f"{kind}_loss_bytes"], int) for r in results["memory"] for kind in ("first", "later"))
    assert (published.read_text() if published.exists() else None) == before


def test_interleaved_step_times_on_a_tiny_model():
    import bench_distill_memory

    cfg = dict(bench_distill_memory.GEMMA, **bench_distill_memory.TINY)
    got = bench_distill_memory.interleaved_times(cfg, 8, 2)
    assert len(got["unchunked_s"]) == len(got["chunked_s"]) == len(got["chunked_over_unchunked"]) == 2
    assert got["median_ratio"] in got["chunked_over_unchunked"]
