"""Magnitude vs Wanda pruning of SmolLM2-135M at 30% / 50% unstructured and 2:4: held-out perplexity.

Every block projection (q/k/v/o, gate/up/down) is pruned, per output row; embeddings, norms and the tied
head stay dense. Wanda's activation norms come from the Wikipedia *calibration* split, collected block by
block from the already-pruned blocks (the paper's procedure); perplexity is measured on the *held-out* split,
which never touched the masks. Latency: dense vs 50% sparse, side by side in one process (dense kernels:
zeros in a dense matrix cost the same as any other value on this CPU).

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_sparsity.py [--quick]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_compress import get_asset, sparsify, sparsity_report  # noqa: E402
from hf_compress.evaluation import (  # noqa: E402
    report_path, write_report,
    latency_side_by_side,
    perplexity,
    tokenize_batches,
    wiki_texts,
)
from hf_compress.methods.sparsity.sparsify import make_permanent  # noqa: E402

logger = logging.getLogger("bench_sparsity")

SETTINGS = [  # (label, sparsity, pattern)
    ("30% unstructured", 0.3, "unstructured"),
    ("50% unstructured", 0.5, "unstructured"),
    ("2:4 (50%)", None, "2:4"),
]


def write_table(path: Path, cmd: str, header: str, rows: list, latency: dict, repeats: int,
                window: int) -> str:
    """The markdown table of ``rows`` (method, label, measured, perplexity, seconds), printed to ``path``."""
    base = rows[0][3]
    lines = [header, "", "| method | sparsity | measured zeros in pruned layers | held-out perplexity "
             "| × dense | prune time |", "|---|---|---:|---:|---:|---:|"]
    for method, label, measured, value, seconds in rows:
        lines.append(f"| {method} | {label} | {measured:.1%} | {value:.2f} | {value / base:.2f}× "
                     f"| {seconds:.1f} s |")
    if latency:
        lines += ["", f"CPU latency, batch 1 × {window} tokens, median of {repeats}, side by side: dense "
                  f"{latency['dense'] * 1e3:.1f} ms, 50% sparse {latency['wanda 50%'] * 1e3:.1f} ms "
                  f"(dense kernels: zeros are not skipped)."]
    table = "\n".join(lines)
    write_report(path, f"# Sparsity: magnitude vs Wanda on SmolLM2-135M\n\n`{cmd}`\n\n{table}\n")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calibration texts and evaluation tokens")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/sparsity.md; a temporary file for --quick)")
    args = parser.parse_args(argv)
    published = Path(__file__).resolve().parent.parent / "benchmarks" / "sparsity.md"
    args.output = report_path(args.output, published, smoke=args.quick)  # --quick: never the published table
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    calib_texts, eval_tokens, repeats = (8, 2048, 3) if args.quick else (32, 8192, 5)
    window = 512
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_sparsity.py" + (" --quick" if args.quick else "")

    folder = get_asset("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    calibration = tokenize_batches(tokenizer, wiki_texts("calibration", n=calib_texts), batch_size=8,
                                   max_length=256)
    calib_tokens = sum(int(b["attention_mask"].sum()) for b in calibration)
    heldout = wiki_texts("heldout")
    header = (f"SmolLM2-135M-Instruct (bundled GGUF, fp32), held-out Wikipedia perplexity over "
              f"{eval_tokens:,} tokens ({window}-token windows); Wanda calibration: {calib_texts} Wikipedia "
              f"calibration summaries ({calib_tokens:,} tokens, up to 256 per text), block by block; "
              f"per-output-row scope; every block projection pruned, embeddings / norms / tied head dense.")

    def ppl(model) -> float:
        return perplexity(model, tokenizer, heldout, max_length=window, batch_size=4, max_tokens=eval_tokens)

    dense = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    dense_state = {k: v.detach().clone() for k, v in dense.state_dict().items()}
    rows = [("dense", "0%", sparsity_report(dense).sparsity, ppl(dense), 0.0)]
    logger.info("dense perplexity %.2f", rows[0][3])
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    inputs = {"input_ids": torch.randint(100, 40000, (1, window), generator=torch.Generator().manual_seed(0))}
    latency: dict = {}
    for method in ("magnitude", "wanda"):
        for label, sparsity, pattern in SETTINGS:
            make_permanent(model)  # drop the previous masks, then restore the dense weights
            model.load_state_dict(dense_state)
            start = time.perf_counter()
            sparsify(model, sparsity=sparsity, method=method, pattern=pattern,
                     calibration=calibration if method == "wanda" else None)
            seconds = time.perf_counter() - start
            measured = sparsity_report(model).sparsity
            rows.append((method, label, measured, ppl(model), seconds))
            logger.info("%s %s: sparsity %.3f, perplexity %.2f (%.1f s to prune)", method, label, measured,
                        rows[-1][3], seconds)
            if method == "wanda" and pattern == "unstructured" and sparsity == 0.5:
                latency = latency_side_by_side({"dense": dense, "wanda 50%": model}, inputs, repeats=repeats)
            table = write_table(Path(args.output), cmd, header, rows, latency, repeats, window)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
