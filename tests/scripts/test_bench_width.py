"""scripts/bench_width.py --tiny end to end (tiny in-process Llama and BERT, synthetic text, offline): every
row is there, the width rows remove ~25% of the block parameters, the saved rows reload exactly, and the
table goes to the path asked for (a tiny run never writes benchmarks/)."""

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_width.py"


def test_tiny_run_writes_every_row(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_width", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_width"] = module
    spec.loader.exec_module(module)
    published = (SCRIPT.parents[1] / "benchmarks" / "width.md")
    before = published.read_text() if published.exists() else None
    out = tmp_path / "w.md"
    assert module.main(["--tiny", "--output", str(out)]) == 0
    text = out.read_text()
    for row in ["| original |", "| FFN only (160→104) |", "| hidden only (64→48) |", "| FFN + hidden (",
                "| depth: drop 1 of 4", "| heads (1 of 2 KV groups kept) + FFN", "| FFN only (160→88) |",
                "refused by prune_width: BERT"]:
        assert row in text, row
    for removed in re.findall(r"\| (FFN[^|]*|hidden only[^|]*) \| [\d.]+ \| [\d.]+ \| ([\d.]+)% \|", text):
        assert abs(float(removed[1]) - 25) < 1.5, removed
    assert text.count("stock reload max diff 0.0e+00") == 2
    assert (published.read_text() if published.exists() else None) == before
