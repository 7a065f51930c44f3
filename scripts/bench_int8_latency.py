"""Latency only, MiniLM-L6 at 1x128 and 8x128, interleaved in one process (medians): fp32, bf16, fp32 under
our block-level torch.compile, our W8A16, our W8A8 (eager with fusions, block-compiled) and torch.ao's
quantize_dynamic. A few minutes; the full table with quality columns is ``make bench-int8``.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_int8_latency.py [--repeats 15] [--threads 1]
"""

import argparse
import copy
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.ao.quantization import quantize_dynamic  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from hf_compress import get_asset, quantize_int8  # noqa: E402
from hf_compress.evaluation import latency_side_by_side, wiki_texts  # noqa: E402
from hf_compress.methods.int8.compile import compile_int8  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = get_asset("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder).eval()
    compiled_fp32 = copy.deepcopy(base)
    compile_int8(compiled_fp32)  # the same block-level compile as ours, without int8
    models = {
        "fp32": base,
        "bf16": copy.deepcopy(base).to(torch.bfloat16),
        "ours w8a16": quantize_int8(copy.deepcopy(base), mode="w8a16"),
        "fp32 torch.compile": compiled_fp32,
        "ours w8a8 (eager, fused)": quantize_int8(copy.deepcopy(base), mode="w8a8"),
        "ours w8a8 (compiled)": quantize_int8(copy.deepcopy(base), mode="w8a8", compile=True),
        "torch.ao quantize_dynamic": quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8),
    }
    texts = wiki_texts("heldout", n=16)
    results = {}
    for rows in (1, 8):
        enc = tokenizer(texts[:rows], padding="max_length", truncation=True, max_length=128, return_tensors="pt")
        with torch.inference_mode():
            results[rows] = latency_side_by_side(models, dict(enc), repeats=args.repeats, warmup=3)
    print("| variant | 1x128 ms | 8x128 ms | 8x128 vs fp32 |\n|---|---|---|---|")
    for name in models:
        print(f"| {name} | {results[1][name] * 1e3:.1f} | {results[8][name] * 1e3:.1f} | "
              f"{results[8]['fp32'] / results[8][name]:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
