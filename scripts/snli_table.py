"""The table of scripts/bench_snli.py: sizes and side-by-side latency of every model, paired comparisons of
the distilled students with the students trained without a teacher, then the markdown."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from transformers import DataCollatorWithPadding

from hf_compress.evaluation import checkpoint_bytes, latency_side_by_side, param_count

COLUMNS = ("model", "layers", "params", "checkpoint bytes", "CPU latency b32 (ms)", "SNLI test acc (%)",
           "% of teacher", "training pairs", "steps", "training CPU-min", "training wall (s)", "steps/s")


def measure(models: dict, rows: dict, test_tok, tokenizer, repeats: int) -> str:
    """Fill layers / params / checkpoint bytes / latency of every row in place; return the latency note."""
    collate = DataCollatorWithPadding(tokenizer)
    first = [{c: test_tok[i][c] for c in test_tok.column_names if c != "label"}
             for i in range(min(32, len(test_tok)))]
    batch = collate(first)  # (32, T) padded to the longest pair of the first 32 test pairs
    latency = latency_side_by_side(models, batch, repeats=repeats, warmup=2)
    with tempfile.TemporaryDirectory(prefix="bench-snli-sizes-") as tmp:
        for i, (name, model) in enumerate(models.items()):
            folder = Path(tmp) / str(i)
            model.save_pretrained(folder)
            rows[name].update(layers=model.config.num_hidden_layers, params=param_count(model),
                              bytes=checkpoint_bytes(folder), latency_s=latency[name])
    return (f"latency: batch of the first {batch['input_ids'].shape[0]} test pairs padded to "
            f"{batch['input_ids'].shape[1]} tokens, median of {repeats} fp32 forwards per model, models "
            f"interleaved in one process on {torch.get_num_threads()} thread(s) (pid {os.getpid()}).")


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: ``b`` and ``c`` are the discordant pairs (one model right, the other
    wrong, and the reverse); under "equally good" each is Binomial(b + c, 1/2)."""
    n, low = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(low + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_notes(preds: dict[str, list[int]], labels: list[int], distilled: list[str],
                 baselines: list[str]) -> list[str]:
    """One line per (distilled, baseline) row pair: the accuracy difference on the same test pairs and the
    exact McNemar test of it (a paired test: tighter than comparing two accuracies' standard errors)."""
    notes = []
    for a in distilled:
        for b in baselines:
            right_a = [p == y for p, y in zip(preds[a], labels)]
            right_b = [p == y for p, y in zip(preds[b], labels)]
            only_a = sum(x and not y for x, y in zip(right_a, right_b))
            only_b = sum(y and not x for x, y in zip(right_a, right_b))
            diff = 100 * (only_a - only_b) / len(labels)
            notes.append(f"paired: {a} vs {b}: {diff:+.2f} points on the same {len(labels):,} test pairs "
                         f"(right where the other is wrong on {only_a:,}, the reverse on {only_b:,}; exact "
                         f"McNemar p = {mcnemar_p(only_a, only_b):.2g})")
    return notes


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def render(rows: dict, notes: list, header: str) -> str:
    """``header``, the markdown table (accuracy in %, % of teacher = accuracy / teacher accuracy), notes."""
    teacher_acc = next(iter(rows.values()))["acc"]
    lines = [header, "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, r in rows.items():
        acc = r["acc"]
        pct = None if acc is None else 100 * acc / teacher_acc
        lat = None if r.get("latency_s") is None else 1000 * r["latency_s"]
        acc_pct = None if acc is None else 100 * acc
        cpu_min = None if r.get("cpu_s") is None else r["cpu_s"] / 60
        cells = [name, _fmt(r.get("layers"), "d"), _fmt(r.get("params"), ","), _fmt(r.get("bytes"), ","),
                 _fmt(lat, ".1f"), _fmt(acc_pct, ".2f"), _fmt(pct, ".1f"), _fmt(r.get("pairs"), ","),
                 _fmt(r.get("steps"), "d"), _fmt(cpu_min, ".1f"), _fmt(r.get("train_s"), ".0f"),
                 _fmt(r.get("steps_per_s"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"
