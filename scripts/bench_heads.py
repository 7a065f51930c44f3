"""Prune 25% and 50% of the attention heads of MiniLM-L6 and SmolLM2-135M, by importance and at random.

* MiniLM-L6 (BERT, 6 layers x 12 heads): importance = |dL/dgate| of the sentence-transformers training loss
  (in-batch contrastive loss on SNLI entailment pairs); quality = mean cosine between the pruned and the
  unpruned model's mean-pooled embeddings of held-out Wikipedia summaries. Physically pruned models are
  saved with their modeling file and reloaded with ``trust_remote_code=True`` as a check.
* SmolLM2-135M (Llama, 30 layers x 9 query heads / 3 KV heads, head_dim 64): importance = |dL/dgate| of the
  LM loss on Wikipedia calibration text; quality = perplexity on held-out Wikipedia text. A stock Llama
  config needs the same (heads, KV heads) in every layer with every KV group of equal size, so "uniform"
  means: the same number of query heads removed from every KV group (``heads/group``: 1 of 3 per group =
  33%, 2 of 3 = 67%), or whole KV groups (``KV groups``: 1 of 3 = 33%, 2 of 3 = 67%). 25% and 50% of 9
  heads are not reachable, so they round to the nearest of these (33% and 67%). ``global`` picks the
  lowest heads anywhere (exactly 25% / 50%), which no stock shape holds: those heads are zeroed, the
  model keeps its size; it shows what the uniform constraint costs.

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_heads.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_compress import get_asset, head_importance, prune_heads, select_heads  # noqa: E402
from hf_compress.assets import load_snli  # noqa: E402
from hf_compress.evaluation import (  # noqa: E402
    reload_check, report_path, write_report,
    embedding_cosine, mean_pooled, param_count, perplexity, tokenize_batches, wiki_texts)
from hf_compress.methods.heads.export import layer_head_counts  # noqa: E402

logger = logging.getLogger("bench_heads")
FRACTIONS = (0.25, 0.5)


def contrastive_loss(model, batch) -> torch.Tensor:
    """sentence-transformers' MultipleNegativesRankingLoss: each premise must pick its own hypothesis."""
    a, b = mean_pooled(model, batch["a"]), mean_pooled(model, batch["b"])  # (B, H) each, unit norm
    return F.cross_entropy(20.0 * a @ b.T, torch.arange(a.shape[0]))


def snli_pair_batches(tokenizer, n_pairs: int, batch_size: int = 16) -> list[dict]:
    rows = load_snli("train").filter(lambda r: r["label"] == 0).select(range(n_pairs))
    a = tokenize_batches(tokenizer, rows["premise"], batch_size, max_length=64)
    b = tokenize_batches(tokenizer, rows["hypothesis"], batch_size, max_length=64)
    return [{"a": x, "b": y} for x, y in zip(a, b)]


def removed_share(total_heads: int, plan: dict) -> str:
    return f"{sum(len(h) for h in plan.values()) / total_heads:.0%}"


def bench_minilm(args) -> list[str]:
    folder = get_asset("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    start = time.perf_counter()
    scores = head_importance(model, snli_pair_batches(tokenizer, args.pairs), loss_fn=contrastive_loss)
    logger.info("MiniLM: scored heads on %d SNLI pairs in %.0f s", args.pairs, time.perf_counter() - start)
    random_scores = torch.rand(n_layers, n_heads, generator=torch.Generator().manual_seed(0))
    evaluation = tokenize_batches(tokenizer, wiki_texts("heldout", n=args.sentences), 32, max_length=128)
    rows = [("original", "-", "0%", param_count(model), 1.0, "")]
    for fraction in FRACTIONS:
        variants = {"importance, uniform": (scores, True), "importance, global": (scores, False),
                    "random, uniform": (random_scores, True)}
        for name, (s, uniform) in variants.items():
            plan = select_heads(s, fraction, uniform=uniform)
            pruned = prune_heads(copy.deepcopy(model), plan)
            cosine = embedding_cosine(model, pruned, evaluation)
            reload = ""
            if name == "importance, global":  # per-layer head counts: the remote-code checkpoint
                reload = reload_check(pruned, AutoModel, evaluation[0], remote=True)
            rows.append((name, f"{fraction:.0%}", removed_share(n_layers * n_heads, plan),
                         param_count(pruned), cosine, reload))
            logger.info("MiniLM %s %.0f%%: heads per layer %s, cosine %.4f", name, fraction * 100,
                        layer_head_counts(pruned), cosine)
    lines = [f"**all-MiniLM-L6-v2** ({n_layers} layers x {n_heads} heads, fp32). Importance from the "
             f"contrastive loss on {args.pairs} SNLI entailment pairs; quality = mean cosine to the unpruned "
             f"model's mean-pooled embeddings of {args.sentences} held-out Wikipedia summaries "
             f"(128 tokens max).", "",
             "| heads chosen by | asked | removed | params (M) | embedding cosine | saved → reloaded |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {a} | {r} | {p / 1e6:.2f} | {c:.4f} | {x} |" for n, a, r, p, c, x in rows]
    return lines


def bench_smollm2(args) -> list[str]:
    folder = get_asset("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    cfg = model.config
    n_layers, n_heads, n_kv = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads
    group = n_heads // n_kv
    start = time.perf_counter()
    calib = tokenize_batches(tokenizer, wiki_texts("calibration", n=args.calib), batch_size=8, max_length=256)
    scores = head_importance(model, calib)
    logger.info("SmolLM2: scored heads on %d texts in %.0f s", args.calib, time.perf_counter() - start)
    random_scores = torch.rand(n_layers, n_heads, generator=torch.Generator().manual_seed(0))
    heldout = wiki_texts("heldout", n=args.eval_tokens // 40)

    def ppl(m):
        return perplexity(m, tokenizer, heldout, max_length=512, max_tokens=args.eval_tokens)

    rows = [("original", "-", "0%", f"{n_heads}/{n_kv}", param_count(model), ppl(model), "")]
    for fraction in FRACTIONS:
        variants = {"importance, heads/group": dict(scores=scores, group_size=group),
                    "importance, KV groups": dict(scores=scores, group_size=group, whole_groups=True),
                    "random, heads/group": dict(scores=random_scores, group_size=group),
                    "importance, global (zeroed)": dict(scores=scores, uniform=False)}
        for name, kwargs in variants.items():
            plan = select_heads(fraction=fraction, **kwargs)
            pruned = prune_heads(copy.deepcopy(model), plan)
            reload = ""
            if name == "importance, KV groups" and not args.quick:
                reload = reload_check(pruned, AutoModelForCausalLM, calib[0])
            shape = f"{pruned.config.num_attention_heads}/{pruned.config.num_key_value_heads}"
            rows.append((name, f"{fraction:.0%}", removed_share(n_layers * n_heads, plan), shape,
                         param_count(pruned), ppl(pruned), reload))
            logger.info("SmolLM2 %s: %s", name, rows[-1])
            del pruned
    lines = [f"**SmolLM2-135M-Instruct** ({n_layers} layers x {n_heads} heads / {n_kv} KV heads, "
             f"head_dim {cfg.head_dim}, fp32). Importance from the LM loss on {args.calib} Wikipedia "
             f"calibration summaries (256 tokens max); perplexity on the first {args.eval_tokens} tokens of "
             f"held-out Wikipedia text in 512-token windows.", "",
             "| heads chosen by | asked | removed | heads/KV per layer | params (M) | wiki held-out ppl | "
             "saved → stock reload |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {n} | {a} | {r} | {s} | {p / 1e6:.1f} | {q:.2f} | {x} |" for n, a, r, s, p, q, x in rows]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calibration texts and evaluation tokens")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/heads.md; a temporary file for --quick)")
    args = parser.parse_args(argv)
    published = Path(__file__).resolve().parent.parent / "benchmarks" / "heads.md"
    args.output = report_path(args.output, published, smoke=args.quick)  # --quick: never the published table
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    args.pairs, args.sentences, args.calib, args.eval_tokens = (
        (64, 64, 8, 2048) if args.quick else (256, 256, 32, 8192))
    torch.manual_seed(0)
    lines = bench_minilm(args) + [""] + bench_smollm2(args)
    table = "\n".join(lines)
    print(table)
    flag = " --quick" if args.quick else ""
    write_report(args.output, f"# Attention-head pruning{' (--quick)' if args.quick else ''}\n\n"
                 f"`HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_heads.py{flag}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
