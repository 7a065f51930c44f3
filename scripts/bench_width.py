"""Width vs depth vs heads at equal block parameters (-25% of the transformer blocks), no retraining.

* SmolLM2-135M (Llama): FFN only, hidden only, FFN + hidden (half the budget each), depth (drop the
  lowest block-influence layers: 7 and 8 of 30 bracket 25%), heads (one of three KV groups by head
  importance, which is 8% of the blocks) + FFN for the rest. Held-out Wikipedia perplexity.
* MiniLM-L6 (BERT): FFN only, depth (1 and 2 of 6 layers bracket 25%), heads (9 of 12 per layer by head
  importance = 25% of the blocks). Hidden channels of BERT are refused by prune_width (no stock config
  describes them), so those rows say so. Embedding cosine to the original and a topic probe.

Width importance: ``width_importance`` on Wikipedia calibration text. Latency: every variant of a model
interleaved in one process (``latency_side_by_side``); compare ratios. ``bytes``: fp32 weights in memory.

    flock /tmp/bench.lock python scripts/bench_width.py            # writes benchmarks/width.md
    python scripts/bench_width.py --tiny                            # tiny in-process models, temp output
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hf_compress import (arch, drop_layers, get_asset, head_importance, layer_importance,  # noqa: E402
                         prune_heads, prune_width, select_heads, select_layers, width_importance)
from hf_compress.evaluation import (embedding_cosine, latency_side_by_side, model_bytes,  # noqa: E402
                                    param_count, perplexity, reload_check, report_path, tokenize_batches,
                                    wiki_texts, write_report)
from hf_compress.methods.heads.stage import embedding_alignment_loss  # noqa: E402
from hf_compress.methods.width.importance import WidthScores  # noqa: E402

logger = logging.getLogger("bench_width")
ROOT = Path(__file__).resolve().parents[1]
BUDGET = 0.25  # share of block parameters to remove


def block_params(model) -> int:
    return sum(p.numel() for p in arch.get_layers(model).parameters())


def _meta_blocks(model, ffn: int, hidden: int) -> int:
    """Block parameters ``model`` would have with MLP width ``ffn`` and residual ``hidden`` (on meta)."""
    with torch.device("meta"):
        shell = type(model)._from_config(copy.deepcopy(model.config))
    scores = WidthScores(ffn=torch.rand(arch.num_layers(model), arch.intermediate_size(model)),
                         hidden=torch.rand(arch.hidden_size(model)))
    prune_width(shell, ffn=ffn, hidden=hidden, scores=scores, round_to=1)
    return block_params(shell)


def solve_size(model, which: str, remove: float, fixed: int | None = None, round_to: int = 8) -> int:
    """The ``ffn`` or ``hidden`` size (a multiple of ``round_to``) that removes ``remove`` block parameters
    (block parameters are linear in each size, the other one held at ``fixed`` or its current value)."""
    ffn_now, hidden_now, base = arch.intermediate_size(model), arch.hidden_size(model), block_params(model)
    if which == "ffn":
        hidden = fixed or hidden_now
        full, less = _meta_blocks(model, ffn_now, hidden), _meta_blocks(model, ffn_now - 8, hidden)
        size = ffn_now - (remove - (base - full)) / ((full - less) / 8)
    else:
        ffn, step = fixed or ffn_now, math.lcm(8, arch.num_heads(model))  # a width the config accepts
        full, less = _meta_blocks(model, ffn, hidden_now), _meta_blocks(model, ffn, hidden_now - step)
        size = hidden_now - (remove - (base - full)) / ((full - less) / step)
    return max(round_to, int(round(size / round_to)) * round_to)


def width_variants(model, scores, base_blocks: int, hidden_ok: bool) -> dict:
    target = BUDGET * base_blocks
    ffn_only = solve_size(model, "ffn", target)
    out = {f"FFN only ({arch.intermediate_size(model)}→{ffn_only})":
           prune_width(copy.deepcopy(model), ffn=ffn_only, scores=scores)}
    if hidden_ok:
        step = math.lcm(8, arch.num_heads(model))  # LlamaConfig: hidden_size % num_attention_heads == 0
        hidden_only = solve_size(model, "hidden", target, round_to=step)
        out[f"hidden only ({arch.hidden_size(model)}→{hidden_only})"] = prune_width(
            copy.deepcopy(model), hidden=hidden_only, scores=scores)
        hid = solve_size(model, "hidden", target / 2, round_to=step)  # about half the budget, the FFN the rest
        ffn = solve_size(model, "ffn", target, fixed=hid)
        out[f"FFN + hidden ({ffn}, {hid})"] = prune_width(copy.deepcopy(model), ffn=ffn, hidden=hid, scores=scores)
    return out


def depth_variants(model, calib) -> dict:
    scores = layer_importance(model, calib, method="block_influence")
    n = arch.num_layers(model)
    out = {}
    for k in sorted({int(BUDGET * n), -(-int(BUDGET * n * 2) // 2)}):  # floor and ceil of 25% of the layers
        k = max(k, 1)
        out[f"depth: drop {k} of {n} (block influence)"] = drop_layers(copy.deepcopy(model),
                                                                        select_layers(scores, k))
    return out


def table(title: str, rows: list[dict], quality: list[str], base_blocks: int) -> list[str]:
    head = ["variant", "params (M)", "block params (M)", "blocks removed", *quality, "latency (× orig)",
            "MB (fp32)", "note"]
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base_latency = rows[0]["latency"]
    for r in rows:
        cells = [r["name"], f"{r['params'] / 1e6:.2f}", f"{r['blocks'] / 1e6:.2f}",
                 f"{1 - r['blocks'] / base_blocks:.1%}", *[r[q] for q in quality],
                 f"{r['latency'] / base_latency:.2f}", f"{r['bytes'] / 1e6:.0f}", r.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def measure(variants: dict, base_blocks: int, latency_inputs: dict, quality_fns: dict) -> list[dict]:
    latency = latency_side_by_side(variants, latency_inputs, repeats=5, warmup=1)
    rows = []
    for name, model in variants.items():
        row = {"name": name, "params": param_count(model), "blocks": block_params(model),
               "bytes": model_bytes(model), "latency": latency[name]}
        for key, fn in quality_fns.items():
            row[key] = fn(model)
        rows.append(row)
        logger.info("%s", {k: v for k, v in row.items()})
    return rows


def bench_causal(model, tokenizer, calib, heldout, max_tokens: int, heads_fraction: float) -> list[str]:
    start = time.perf_counter()
    scores = width_importance(model, calib)
    logger.info("width importance in %.0f s", time.perf_counter() - start)
    base_blocks = block_params(model)
    variants = {"original": model, **width_variants(model, scores, base_blocks, hidden_ok=True),
                **depth_variants(model, calib)}
    group = arch.num_heads(model) // arch.num_kv_heads(model)
    plan = select_heads(head_importance(model, calib, progress=False), heads_fraction, group_size=group,
                        whole_groups=True)
    headed = prune_heads(copy.deepcopy(model), plan)
    rest = solve_size(headed, "ffn", BUDGET * base_blocks - (base_blocks - block_params(headed)))
    variants[f"heads ({arch.num_kv_heads(headed)} of {arch.num_kv_heads(model)} KV groups kept) + FFN "
             f"{rest}"] = prune_width(headed, ffn=rest, scores=width_importance(headed, calib))
    ids = calib[0]["input_ids"][:1]
    window = min(512, max_tokens)
    rows = measure(variants, base_blocks, {"input_ids": ids, "use_cache": False}, {"ppl": lambda m: (
        f"{perplexity(m, tokenizer, heldout, max_length=window, max_tokens=max_tokens, progress=False):.2f}")})
    ffn_hidden = next(n for n in variants if n.startswith("FFN + hidden"))
    rows[list(variants).index(ffn_hidden)]["note"] = "stock reload " + reload_check(
        variants[ffn_hidden], AutoModelForCausalLM, {"input_ids": ids})
    return table(f"ppl: held-out perplexity on {max_tokens} tokens ({window}-token windows)", rows, ["ppl"],
                 base_blocks)


def bench_encoder(model, tokenizer, calib, evaluation, probe) -> list[str]:
    scores = width_importance(model, calib)
    base_blocks = block_params(model)
    variants = {"original": model, **width_variants(model, scores, base_blocks, hidden_ok=False),
                **depth_variants(model, calib)}
    frac = 0.75  # 9 of 12 heads: the attention is a third of a MiniLM block
    heads = head_importance(model, calib, loss_fn=embedding_alignment_loss(copy.deepcopy(model)), progress=False)
    variants[f"heads ({frac:.0%} of heads, by importance)"] = prune_heads(copy.deepcopy(model),
                                                                          select_heads(heads, frac))
    quality = {"cosine": lambda m: f"{embedding_cosine(model, m, evaluation):.4f}"}
    if probe:
        from hf_compress.recipe.measure import topic_probe

        quality["topic probe"] = lambda m: f"{topic_probe(m, tokenizer, max_length=128):.3f}"
    rows = measure(variants, base_blocks, dict(evaluation[0]), quality)
    ffn = next(n for n in variants if n.startswith("FFN only"))
    rows[list(variants).index(ffn)]["note"] = "stock reload " + reload_check(variants[ffn], AutoModel,
                                                                                          evaluation[0])
    lines = table("cosine: mean cosine to the original's embeddings of held-out texts; topic probe: "
                  "nearest-centroid topic accuracy on held-out Wikipedia summaries", rows, list(quality), base_blocks)
    return lines + ["| hidden only, FFN + hidden | - | - | - | " + "- | " * len(quality)
                    + "- | - | refused by prune_width: BERT derives the head size from hidden_size, so no stock "
                      "config describes a narrower residual |"]


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a dog cat man bird runs sleeps eats sings river city music science law art".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (24,), generator=g)) for _ in range(48)]
    return tokenizer, texts


def run_tiny() -> list[str]:
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    tokenizer, texts = _tiny_tokenizer()
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=160,
                                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                         head_dim=16, max_position_embeddings=64, pad_token_id=0)).eval()
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=160,
                                num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=64)).eval()
    calib = tokenize_batches(tokenizer, texts[:32], 8, max_length=32)
    return (["## tiny llama", ""] + bench_causal(llama, tokenizer, calib, texts[32:], 256, 0.5)
            + ["", "## tiny bert", ""] + bench_encoder(bert, tokenizer, calib, calib[:2], probe=False))


def run_real(quick: bool, part: str = "all") -> list[str]:
    lines = run_smollm2(quick) if part in ("all", "smollm2") else []
    return lines + (run_minilm(quick) if part in ("all", "minilm") else [])


def run_smollm2(quick: bool) -> list[str]:
    folder = get_asset("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    calib = tokenize_batches(tokenizer, wiki_texts("calibration", n=16 if quick else 32), 8, max_length=256)
    tokens = 2048 if quick else 8192
    lines = ["## SmolLM2-135M-Instruct (30 layers, hidden 576, MLP 1536, 9 heads / 3 KV heads)", "",
             f"Importance on {len(calib) * 8} Wikipedia calibration summaries (256 tokens max)."]
    return lines + bench_causal(model, tokenizer, calib, wiki_texts("heldout", n=tokens // 40), tokens, 1 / 3)


def run_minilm(quick: bool) -> list[str]:
    folder = get_asset("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    calib = tokenize_batches(tokenizer, wiki_texts("calibration", n=64 if quick else 256), 16, max_length=128)
    evaluation = tokenize_batches(tokenizer, wiki_texts("heldout", n=64 if quick else 256), 32, max_length=128)
    lines = ["", "## all-MiniLM-L6-v2 (6 layers, hidden 384, MLP 1536, 12 heads)", "",
              f"Importance on {sum(len(b['input_ids']) for b in calib)} Wikipedia calibration summaries."]
    return lines + bench_encoder(model, tokenizer, calib, evaluation, probe=not quick)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--tiny", action="store_true", help="tiny in-process models, synthetic text (tests)")
    size.add_argument("--quick", action="store_true", help="fewer calibration and evaluation tokens")
    parser.add_argument("--part", choices=("all", "smollm2", "minilm"), default="all", help="which model(s)")
    parser.add_argument("--output", default=None,
                        help="markdown path (default benchmarks/width.md; a temp file for --tiny / --quick)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    load = os.getloadavg()
    start = time.perf_counter()
    lines = run_tiny() if args.tiny else run_real(args.quick, args.part)
    flag = " --tiny" if args.tiny else " --quick" if args.quick else ""
    flag += f" --part {args.part}" if args.part != "all" else ""
    text = "\n".join([f"# Width pruning vs depth and heads at -25% of block parameters{flag}", "",
                      f"`flock /tmp/bench.lock python scripts/bench_width.py{flag}`; no retraining; load average "
                      f"{load[0]:.1f} before, {os.getloadavg()[0]:.1f} after, {time.perf_counter() - start:.0f} s "
                      f"on {os.cpu_count()} CPUs.", "", *lines, ""])
    print(text)
    out = report_path(args.output, ROOT / "benchmarks" / "width.md", smoke=bool(flag))  # never the published table
    write_report(out, text)
    logger.info("table written to %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
