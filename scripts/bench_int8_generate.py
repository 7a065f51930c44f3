"""Batch-1 ``generate`` tokens/s of SmolLM2-135M-Instruct: fp32, bf16, our W8A16 and our W8A8 (the default
``quantize_int8`` call, eager kernels), side by side in one process.

Greedy decoding of exactly ``--new-tokens`` tokens (EOS ignored) after a held-out Wikipedia prompt of
``--prompt-tokens`` tokens; the variants run interleaved (round-robin, order rotated each round) and the
median over ``--runs`` rounds is reported, after one warm-up round. tokens/s = new tokens / wall time of the
whole ``generate`` call (prefill included). Also: whether each variant's tokens equal fp32's.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_int8_generate.py [--new-tokens 64] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_compress import get_asset, quantize_int8  # noqa: E402
from hf_compress.evaluation import native_bf16_cpu, wiki_texts  # noqa: E402
from hf_compress.methods.int8.kernels import w8a8_kernel  # noqa: E402


def variants(base) -> dict:
    return {
        "fp32": base,
        "bf16": copy.deepcopy(base).to(torch.bfloat16),
        "ours w8a16": quantize_int8(copy.deepcopy(base), mode="w8a16"),
        "ours w8a8": quantize_int8(copy.deepcopy(base), mode="w8a8"),
    }


def timed_generate(model, ids, new_tokens: int) -> tuple[float, torch.Tensor]:
    mask = torch.ones_like(ids)
    start = time.perf_counter()
    out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens,
                         min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
    return time.perf_counter() - start, out[0, ids.shape[1]:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for name in ("new_tokens", "prompt_tokens", "runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    folder = get_asset("smollm2")
    tok = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = tok(wiki_texts("heldout", n=1)[0], return_tensors="pt")["input_ids"][:, : args.prompt_tokens]
    models = variants(base)
    times = {n: [] for n in models}
    tokens = {}
    names = list(models)
    with torch.inference_mode():
        for r in range(args.runs + 1):  # round 0 warms up
            for name in names[r % len(names):] + names[: r % len(names)]:
                elapsed, tokens[name] = timed_generate(models[name], ids, args.new_tokens)
                if r:
                    times[name].append(elapsed)
                print(f"round {r} {name}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    rate = {n: args.new_tokens / statistics.median(t) for n, t in times.items()}
    same = {n: int((tokens[n] == tokens["fp32"]).cumprod(0).sum()) for n in models}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()} (native bf16: {native_bf16_cpu()}), W8A8 kernel "
          f"{w8a8_kernel()!r}; batch 1, prompt {ids.shape[1]} tokens, {args.new_tokens} new tokens greedy, "
          f"median of {args.runs} interleaved runs\n")
    print("| variant | tokens/s | vs fp32 | leading tokens equal to fp32's |\n|---|---|---|---|")
    for n in models:
        print(f"| {n} | {rate[n]:.1f} | {rate[n] / rate['fp32']:.2f}x | {same[n]} / {args.new_tokens} |")
    if args.json:
        print(json.dumps({"tokens_per_s": rate, "same_prefix": same, "kernel": w8a8_kernel(),
                          "threads": torch.get_num_threads(), "seconds": times}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
