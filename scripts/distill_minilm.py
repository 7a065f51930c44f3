"""Distil the bundled all-MiniLM-L6-v2 (6 layers) into a 3-layer student on Wikipedia summaries.

The student starts from teacher layers [0, 2, 5] (``student_from_teacher``), so its hidden states 1, 2, 3 are
paired with the teacher's 1, 3, 6 (the blocks they were copied from). Training uses only hidden-state losses
(``alpha_logits=0``: a bare encoder has no logits) on *calibration* summaries; the hidden-state losses and the
mean-pooled sentence-embedding cosine to the teacher are measured on *held-out* summaries before and after.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/distill_minilm.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

from hf_compress import DistillationArguments, DistillationTrainer, get_asset, student_from_teacher  # noqa: E402
from hf_compress.distillation.losses import hidden_cosine, hidden_mse  # noqa: E402
from hf_compress.evaluation import (  # noqa: E402
    embedding_cosine, param_count, report_path, tokenize_batches, wiki_texts, write_report)

logger = logging.getLogger("distill_minilm")
KEEP = [0, 2, 5]


@torch.inference_mode()
def hidden_losses(student, teacher, batches, pairs) -> dict[str, float]:
    """Held-out hidden-state MSE and 1 - cosine per token, averaged over the layer pairs (as in training)."""
    sums, tokens = {"mse": 0.0, "cosine": 0.0}, 0
    for batch in batches:
        hs = student(**batch, output_hidden_states=True).hidden_states
        ht = teacher(**batch, output_hidden_states=True).hidden_states
        mask = batch["attention_mask"].bool()
        for s, t in pairs:
            sums["mse"] += hidden_mse(hs[s], ht[t], mask).item() / len(pairs)
            sums["cosine"] += hidden_cosine(hs[s], ht[t], mask).item() / len(pairs)
        tokens += int(mask.sum())
    return {k: v / tokens for k, v in sums.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~2 minute run: fewer steps and held-out texts")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 200, quick 40)")
    parser.add_argument("--batch-size", type=int, default=None, help="default 16, quick 8")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per summary (truncated)")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--hidden-loss", default="mse+cosine", choices=["mse", "cosine", "mse+cosine"])
    parser.add_argument("--save-dir", default=None, help="where to save the student (default: a temp folder)")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/distill_minilm.md; a temp file for --quick)")
    args = parser.parse_args(argv)
    published = Path(__file__).resolve().parent.parent / "benchmarks" / "distill_minilm.md"
    args.output = report_path(args.output, published, smoke=args.quick)  # --quick: never the published table
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s: %(message)s")
    torch.manual_seed(0)
    steps = args.steps or (40 if args.quick else 200)
    args.batch_size = args.batch_size or (8 if args.quick else 16)
    n_eval = 64 if args.quick else 256

    folder = get_asset("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    teacher = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    student = student_from_teacher(teacher, keep=KEEP)
    pairs = [[i + 1, k + 1] for i, k in enumerate(KEEP)]  # hidden-state indices: block k -> k + 1

    train_texts = wiki_texts("calibration", n=steps * args.batch_size)
    train = Dataset.from_dict(dict(tokenizer(train_texts, truncation=True, max_length=args.max_length)))
    heldout = wiki_texts("heldout", n=n_eval)
    eval_batches = tokenize_batches(tokenizer, heldout, batch_size=16, max_length=args.max_length)

    logger.info("measuring the initial student on %d held-out summaries", len(heldout))
    before = {**hidden_losses(student.eval(), teacher, eval_batches, pairs),
              "embedding_cosine": embedding_cosine(teacher, student, eval_batches)}

    save_dir = args.save_dir or tempfile.mkdtemp(prefix="distill_minilm-")
    targs = DistillationArguments(
        output_dir=save_dir, alpha_logits=0.0, alpha_hidden=1.0, hidden_loss=args.hidden_loss,
        layer_map=json.dumps(pairs), per_device_train_batch_size=args.batch_size, max_steps=steps,
        learning_rate=args.lr, warmup_steps=max(1, steps // 10), lr_scheduler_type="linear",
        logging_steps=max(1, steps // 10), save_strategy="no", report_to="none", use_cpu=True, seed=0,
        dataloader_num_workers=0,
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=targs, train_dataset=train,
                                  processing_class=tokenizer)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.train()
    train_s, train_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    trainer.save_model(save_dir)
    after = {**hidden_losses(student.eval(), teacher, eval_batches, pairs),
             "embedding_cosine": embedding_cosine(teacher, student, eval_batches)}

    rows = [
        ("hidden-state MSE (held-out, mean over 3 layer pairs)", before["mse"], after["mse"]),
        ("hidden-state 1 - cosine (held-out)", before["cosine"], after["cosine"]),
        ("mean-pooled embedding cosine to the teacher (held-out)", before["embedding_cosine"],
         after["embedding_cosine"]),
    ]
    summary = (
        f"Teacher all-MiniLM-L6-v2 ({param_count(teacher) / 1e6:.1f}M params, 6 layers) -> student "
        f"({param_count(student) / 1e6:.1f}M params, 3 layers from teacher layers {KEEP}). {steps} steps x "
        f"batch {args.batch_size} x <= {args.max_length} tokens of Wikipedia calibration summaries, "
        f"loss `{args.hidden_loss}` on pairs {pairs}, lr {args.lr}; {len(heldout)} held-out summaries; "
        f"training took {train_s:.0f} s wall, {train_cpu:.0f} s CPU, {torch.get_num_threads()} thread(s)"
        f"{' (--quick)' if args.quick else ''}."
    )
    lines = [
        summary,
        "",
        "| metric | before distillation | after distillation |",
        "|---|---|---|",
        *[f"| {name} | {b:.4f} | {a:.4f} |" for name, b, a in rows],
    ]
    table = "\n".join(lines)
    print(table)
    write_report(args.output, table + "\n")
    logger.info("student saved to %s; table written to %s", save_dir, args.output)
    return 0 if after["mse"] < before["mse"] else 1


if __name__ == "__main__":
    sys.exit(main())
