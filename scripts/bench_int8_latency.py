"""Latency only, MiniLM-L6 at 1x128 and 8x128 with the tokenizer's attention mask (real padding), interleaved in
one process (medians): fp32, bf16, fp32 under our block-level torch.compile, our W8A16, our W8A8 as the default
call gives it (``quantize_int8(model, mode="w8a8")``: eager kernels with fusions), W8A8 loaded back with
``from_pretrained``, W8A8 block-compiled, torch.ao's quantize_dynamic and, with ``--ort`` (onnx and
onnxruntime installed: ``make bench-int8``'s side venv), ONNX Runtime fp32 and ``quantize_dynamic`` int8
(scripts/ort_baseline.py); plus the embedding cosine to fp32 on the timed batch. The W8A8 matmul is the one :func:`hf_compress.methods.int8.kernels.w8a8_kernel` picks for
this CPU (printed; ``--kernel`` overrides). A few minutes; the full table with quality columns is
``make bench-int8``.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_int8_latency.py [--repeats 15] [--threads 1] [--json]
    HF_HUB_OFFLINE=1 PYTHONPATH=. /tmp/hf_compress_ortvenv/bin/python scripts/bench_int8_latency.py --ort
"""

import argparse
import copy
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.ao.quantization import quantize_dynamic  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

import hf_compress  # noqa: E402,F401 - registers the int8 loader for from_pretrained
from hf_compress import get_asset, quantize_int8  # noqa: E402
from hf_compress.evaluation import latency_side_by_side, mean_pooled, wiki_texts  # noqa: E402
from hf_compress.methods.int8.compile import compile_int8  # noqa: E402
from hf_compress.methods.int8.kernels import W8A8_KERNELS, set_w8a8_kernel  # noqa: E402


def build(base: nn.Module, tmp: str, with_compile: bool = True) -> dict[str, nn.Module]:
    compiled_fp32 = copy.deepcopy(base)
    compile_int8(compiled_fp32)  # the same block-level compile as ours, without int8
    w8a8 = quantize_int8(copy.deepcopy(base), mode="w8a8")  # the default call
    w8a8.save_pretrained(f"{tmp}/w8a8")
    models = {
        "fp32": base,
        "bf16": copy.deepcopy(base).to(torch.bfloat16),
        "ours w8a16": quantize_int8(copy.deepcopy(base), mode="w8a16"),
        "ours w8a8 (default call)": w8a8,
        "ours w8a8 (from_pretrained)": AutoModel.from_pretrained(f"{tmp}/w8a8").eval(),
        "torch.ao quantize_dynamic": quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8),
    }
    if with_compile:
        models["fp32 torch.compile"] = compiled_fp32
        models["ours w8a8 (compiled)"] = quantize_int8(copy.deepcopy(base), mode="w8a8", compile=True)
    return models


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--kernel", default="auto", choices=["auto", *W8A8_KERNELS], help="W8A8 matmul")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled rows")
    parser.add_argument("--ort", action="store_true", help="add ONNX Runtime fp32 and int8 rows")
    parser.add_argument("--json", action="store_true", help="print the medians as JSON too")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    kernel = set_w8a8_kernel(args.kernel)
    folder = get_asset("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModel.from_pretrained(folder).eval()
    texts = wiki_texts("heldout", n=16)
    with tempfile.TemporaryDirectory() as tmp:
        models = build(base, tmp, with_compile=not args.no_compile)
        if args.ort:
            from ort_baseline import OrtEncoder, export  # scripts/ is on sys.path when this file runs

            example = dict(tokenizer(texts[:8], padding="max_length", truncation=True, max_length=128,
                                     return_tensors="pt"))
            fp32_onnx, int8_onnx = export(base, example, Path(tmp))
            models["ORT fp32"] = OrtEncoder(fp32_onnx, torch.get_num_threads())
            models["ORT quantize_dynamic int8"] = OrtEncoder(int8_onnx, torch.get_num_threads())
        results, cosine = {}, {}
        for rows in (1, 8):
            enc = tokenizer(texts[:rows], padding="max_length", truncation=True, max_length=128,
                            return_tensors="pt")
            with torch.inference_mode():
                results[rows] = latency_side_by_side(models, dict(enc), repeats=args.repeats, warmup=3)
                if rows == 8:
                    ref = mean_pooled(base, dict(enc))
                    cosine = {n: float((ref * mean_pooled(m, dict(enc))).sum(-1).mean()) for n, m in models.items()}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, W8A8 kernel {kernel!r}, medians of {args.repeats}, "
          f"8x128 batch padded with its attention mask ({int(enc['attention_mask'].sum())} real tokens)\n")
    print("| variant | 1x128 ms | 8x128 ms | 8x128 vs fp32 | 8x128 vs bf16 | cosine to fp32 (8x128) |")
    print("|---|---|---|---|---|---|")
    for name in models:
        print(f"| {name} | {results[1][name] * 1e3:.1f} | {results[8][name] * 1e3:.1f} | "
              f"{results[8]['fp32'] / results[8][name]:.2f}x | {results[8]['bf16'] / results[8][name]:.2f}x | "
              f"{cosine[name]:.4f} |")
    if args.json:
        print(json.dumps({"kernel": kernel, "threads": torch.get_num_threads(), "cosine": cosine,
                          "ms": {f"{r}x128": {n: t * 1e3 for n, t in res.items()} for r, res in results.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
