"""`bench` of an int8 checkpoint times the eager kernels that from_pretrained gives and the compiled fast path
side by side (slow: torch.compile)."""

from __future__ import annotations

import pytest
import torch
from ecosystem.st_folder import make_st_folder, recipe_dict

import hf_compress
from hf_compress.recipe.bench import bench
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe


@pytest.mark.slow
def test_bench_reports_eager_and_compiled_int8(tmp_path):
    base = make_st_folder(tmp_path / "base")
    out = run_recipe(parse_recipe(recipe_dict(base, tmp_path / "out", [{"quantize_int8": {"mode": "w8a8"}}]))).output_dir
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"alpha beta {i} gamma delta" for i in range(40)))
    rows = bench(str(out), baseline=str(base), texts_file=str(texts), samples=4, repeats=1)
    assert [r["model"] for r in rows] == [str(base), str(out), f"{out} (compiled)"]
    assert all(r["latency_ms"] > 0 for r in rows) and rows[1]["speedup"] > 0 and rows[2]["speedup"] > 0
    assert rows[2]["embedding_cosine"] == pytest.approx(rows[1]["embedding_cosine"], abs=1e-2)
    assert torch.__version__ and hasattr(hf_compress, "compile_int8")
