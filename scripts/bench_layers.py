"""Drop 25% of SmolLM2-135M's layers, chosen four ways, and measure held-out perplexity.

* ``block_influence``: ShortGPT scores (``layer_importance``) on Wikipedia *calibration* text; the lowest go.
* ``angular block``: Gromov et al. angular distance for blocks of k layers; the best contiguous block goes.
* ``last k``: the last k layers (the naive baseline), and the k layers just below the last one.

Perplexity is measured on the *held-out* Wikipedia split and on the Python documentation (out of domain),
neither of which scored the layers. Latency: median forward time, all models interleaved in one process.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_layers.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_compress import get_asset, layer_importance, select_layers, student_from_teacher
from hf_compress.assets import load_python_docs
from hf_compress.evaluation import (
    report_path, write_report,
    latency_side_by_side,
    param_count,
    perplexity,
    texts_for_tokens,
    tokenize_batches,
    wiki_texts,
)

logger = logging.getLogger("bench_layers")


def fmt(x: float) -> str:
    return f"{x:.2f}" if x < 1e4 else f"{x:.2g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer calibration texts and evaluation tokens")
    parser.add_argument("--fraction", type=float, default=0.25, help="fraction of layers to drop")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/layers.md; a temporary file for --quick)")
    args = parser.parse_args(argv)
    published = Path(__file__).resolve().parent.parent / "benchmarks" / "layers.md"
    args.output = report_path(args.output, published, smoke=args.quick)  # --quick: never the published table
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    calib_texts, eval_tokens, repeats = (8, 2048, 2) if args.quick else (32, 8192, 5)
    window = 512

    folder = get_asset("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    n = model.config.num_hidden_layers
    k = int(n * args.fraction + 0.5)

    start = time.perf_counter()
    calib = tokenize_batches(
        tokenizer, wiki_texts("calibration", n=calib_texts), batch_size=8, max_length=256
    )
    influence = layer_importance(model, calib, method="block_influence")
    angular = layer_importance(model, calib, method="angular", n=k)
    logger.info("scored layers on %d calibration texts in %.0f s", calib_texts, time.perf_counter() - start)
    choices = {
        "original": [],
        "block_influence": select_layers(influence, k),
        f"angular block (n={k})": select_layers(angular, k, contiguous=True, block=k),
        f"last {k}": list(range(n - k, n)),
        f"last {k} before the final layer": list(range(n - 1 - k, n - 1)),
    }
    heldout = {
        "wiki held-out": texts_for_tokens(wiki_texts("heldout"), eval_tokens, 6.0),
        "python docs": texts_for_tokens(load_python_docs(), eval_tokens, 6.0),
    }

    models, rows = {}, []
    for name, drop in choices.items():
        keep = [i for i in range(n) if i not in drop]
        student = student_from_teacher(model, keep=keep) if drop else model
        models[name] = student
        ppl = {
            s: perplexity(student, tokenizer, texts, max_length=window, max_tokens=eval_tokens)
            for s, texts in heldout.items()
        }
        logger.info("%s: dropped %s, perplexity %s", name, drop, ppl)
        rows.append((name, drop, param_count(student), ppl))
    inputs = {"input_ids": torch.randint(100, 1000, (1, 256), generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        latency = latency_side_by_side(models, inputs, repeats=repeats, warmup=1)

    lines = [
        (
            f"SmolLM2-135M-Instruct (fp32, {n} layers), {k} layers dropped ({args.fraction:.0%}). "
            f"Layers scored on {calib_texts} Wikipedia calibration summaries (256 tokens max); perplexity on "
            f"the first {eval_tokens} tokens of held-out text in {window}-token windows; latency: median of "
            f"{repeats} forward passes of 1×256 tokens, models interleaved."
        ),
        "",
        (
            "| layers dropped by | dropped | params (M) | wiki held-out ppl | python docs ppl "
            "| latency vs original |"
        ),
        "|---|---|---|---|---|---|",
    ]
    for name, drop, params, ppl in rows:
        lines.append(
            f"| {name} | {drop or '-'} | {params / 1e6:.1f} | {fmt(ppl['wiki held-out'])} | "
            f"{fmt(ppl['python docs'])} | {latency[name] / latency['original']:.2f}× |"
        )
    lines += ["", f"block_influence scores: {[round(s, 3) for s in influence]}"]
    table = "\n".join(lines)
    print(table)
    flag = " --quick" if args.quick else ""
    command = f"HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_layers.py{flag}"
    write_report(args.output, f"# Layer dropping{flag}\n\n`{command}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
