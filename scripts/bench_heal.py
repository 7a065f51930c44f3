"""Healing SmolLM2-135M after compression: distillation vs plain LM fine-tuning at the same budget.

    make bench-heal                                   # full budget (~1M tokens per arm) -> benchmarks/heal.md
    python scripts/bench_heal.py --preset cpu         # what fits a 2-core CPU (~25 CPU-min per arm) -> same
    python scripts/bench_heal.py --quick              # a short run, written to a temporary file
    python scripts/bench_heal.py --tiny               # tiny in-process Llama, seconds (what the tests run)
    python scripts/bench_heal.py --device cuda        # the GPU budget (bf16, 16 x 512 tokens a step)
    python scripts/bench_heal.py --quick --set steps=200 --output /tmp/x.md   # any HealSettings field

Each compression (``layers``: 25% of the layers dropped by block influence; ``heads``: whole KV groups by
importance; ``width``: FFN neurons by activation importance, by default as many block parameters as
``layers`` removes) is healed from the same pruned copy with the same tokens, steps, batch and learning-rate
schedule: (1) forward-KL distillation from the original model's cached top-k logits, (2) plain language-model
fine-tuning without a teacher (``finetune`` picks which compressions get it). Held-out perplexity on Wikipedia
summaries and the Python docs (never trained on) before and after, then W8A16 and W8A8 (SmoothQuant auto +
GPTQ) of the distilled model. Recovered share of the gap = (ln ppl_pruned - ln ppl_healed) /
(ln ppl_pruned - ln ppl_original). bf16 autocast is used only where bf16 is native (CUDA, or a CPU with
AVX512-BF16 / AMX): emulated on an AVX2 CPU it was 8x slower than fp32. --quick / --tiny never write
``benchmarks/heal.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import heal_data  # noqa: E402
from heal_settings import COMPRESSIONS, PRESETS, HealSettings, make_settings  # noqa: E402,F401
import heal_table  # noqa: E402

logger = logging.getLogger("bench_heal")
ROOT = Path(__file__).resolve().parent.parent
# ----------------------------------------------------------------------------------------- compressing
def compress(kind: str, teacher, calib: list[dict], s: HealSettings):
    """A pruned copy of ``teacher`` and a one-line description, or (None, reason) when not available."""
    import hf_compress
    from hf_compress import arch

    if kind == "layers":
        n = arch.num_layers(teacher)
        scores = hf_compress.layer_importance(teacher, calib, method="block_influence")
        drop = hf_compress.select_layers(scores, max(1, round(n * s.layer_fraction)))
        keep = [i for i in range(n) if i not in drop]
        return hf_compress.student_from_teacher(teacher, keep=keep), f"layers {drop} of {n} dropped"
    if kind == "heads":
        cfg = teacher.config
        group = cfg.num_attention_heads // (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
        scores = hf_compress.head_importance(teacher, calib)
        plan = hf_compress.select_heads(scores, s.head_fraction, uniform=True, group_size=group, whole_groups=True)
        student = hf_compress.prune_heads(copy.deepcopy(teacher), plan)
        return student, f"{sum(map(len, plan.values()))} of {scores.numel()} heads (whole KV groups) removed"
    before = arch.intermediate_size(teacher)
    if s.width_match:  # the block parameters of `layers`: drop k of n identical blocks = k/n of them
        import bench_width

        n = arch.num_layers(teacher)
        k = max(1, round(n * s.layer_fraction))
        size = bench_width.solve_size(teacher, "ffn", k / n * bench_width.block_params(teacher))
        why = f", the block parameters of {k} of {n} layers dropped"
    else:
        size, why = s.width_fraction, ""
    student = hf_compress.prune_width(copy.deepcopy(teacher), ffn=size,
                                      scores=hf_compress.width_importance(teacher, calib))
    return student, f"FFN {before}→{arch.intermediate_size(student)} neurons by activation importance{why}"


# --------------------------------------------------------------------------------------------- healing
def heal(kind: str, student, teacher, s: HealSettings, blocks: torch.Tensor, work: Path,
         cache: Path | None = None) -> dict:
    """Train ``student`` in place for ``s.steps`` steps: ``kind`` is "distill" (from ``cache`` when given,
    else the live ``teacher``) or "finetune"."""
    import datasets
    from transformers import Trainer, TrainingArguments, default_data_collator

    from hf_compress import DistillationArguments, DistillationTrainer

    columns = {"input_ids": blocks.tolist()}
    collate = default_data_collator
    if kind == "finetune":
        columns["labels"] = columns["input_ids"]
    elif s.alpha_task:  # labels added per batch: the training set stays the one the teacher cache was written for
        def collate(features):
            batch = default_data_collator(features)
            batch["labels"] = batch["input_ids"].clone()
            return batch
    common = dict(output_dir=str(work / kind), per_device_train_batch_size=s.batch_size, max_steps=s.steps,
                  learning_rate=s.learning_rate, lr_scheduler_type="cosine", warmup_steps=s.warmup,
                  weight_decay=0.0, bf16=s.bf16, use_cpu=s.device == "cpu", seed=s.seed, data_seed=s.seed,
                  save_strategy="no", report_to=[], logging_steps=max(1, s.steps // 10), disable_tqdm=False,
                  dataloader_num_workers=0, remove_unused_columns=False)
    trainer_kwargs = dict(model=student.train().requires_grad_(True), train_dataset=datasets.Dataset.from_dict(columns),
                          data_collator=collate)
    if kind == "distill":
        args = DistillationArguments(**common, alpha_logits=1.0, alpha_task=s.alpha_task,
                                     temperature=s.temperature, logit_loss="forward_kl")
        source = {"teacher_cache": str(cache)} if cache is not None else {"teacher_model": teacher}
        trainer = DistillationTrainer(args=args, **source, **trainer_kwargs)
    else:
        trainer = Trainer(args=TrainingArguments(**common), **trainer_kwargs)
    wall, cpu = time.perf_counter(), time.process_time()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    student.eval()
    return {"train_wall_s": time.perf_counter() - wall, "train_cpu_s": time.process_time() - cpu,
            "tokens": s.tokens, "steps": trainer.state.global_step,
            "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None}


def quantized(model, mode: str, calib: list[dict]):
    """An int8 copy on the CPU: ``w8a16`` (round to nearest), ``w8a8`` with SmoothQuant auto + GPTQ, or
    ``w8a8-rtn`` (round to nearest, per-token activations)."""
    from hf_compress import quantize_int8

    cpu = copy.deepcopy(model).cpu().float().eval()
    if mode in ("w8a16", "w8a8-rtn"):
        return quantize_int8(cpu, mode=mode.removesuffix("-rtn"))
    return quantize_int8(cpu, mode="w8a8", smoothquant="auto", method="gptq", calibration=calib)


# ------------------------------------------------------------------------------------------------ main
def evaluate(model, tokenizer, corpora, s: HealSettings) -> dict[str, float]:
    from hf_compress.evaluation import perplexity, texts_for_tokens

    return {name: perplexity(model, tokenizer, texts_for_tokens(texts, s.eval_tokens),
                             max_length=s.eval_window, max_tokens=s.eval_tokens)
            for name, texts in corpora.heldout.items()}


def run(s: HealSettings, tiny: bool) -> tuple[list[dict], list[str], str]:
    """Every row of the table (dicts), notes, and the model's name."""
    teacher, tokenizer, corpora, model_name = heal_data.setup(s, tiny)
    device = torch.device(s.device)
    teacher.to(device)
    train_blocks, quant_blocks = heal_data.run_blocks(tokenizer, corpora, s)
    calib = [{"input_ids": b} for b in quant_blocks.split(s.batch_size)]
    from hf_compress.evaluation import texts_for_tokens, tokenize_batches

    score_texts = texts_for_tokens(corpora.train["wiki"], s.calib_texts * s.seq_len)[: s.calib_texts]
    score_batches = [{k: v.to(device) for k, v in b.items()}
                     for b in tokenize_batches(tokenizer, score_texts, batch_size=8, max_length=s.seq_len)]
    rows = [dict(compression="-", model="original", ppl=evaluate(teacher, tokenizer, corpora, s),
                 module=teacher)]
    notes = []
    with tempfile.TemporaryDirectory(prefix="bench-heal-") as tmp:
        cache = None
        if s.teacher_cache and s.distill:
            cache = Path(s.cache_dir) if s.cache_dir else Path(tmp) / "teacher-cache"
            cost = heal_data.cache_teacher(teacher, tokenizer, s, train_blocks, cache)
            how = "by `--cache-only`, reused here" if cost.get("reused") else "in this run"
            spent = ("at a cost not recorded (kept from before the cost record)" if cost.get("unknown") else
                     f"in {cost['cache_cpu_s'] / 60:.1f} CPU-min ({cost['cache_wall_s'] / 60:.1f} wall-min, "
                     f"{cost.get('threads', '?')} thread(s))")
            notes.append(f"teacher cache: top-{s.top_k} logits of the {len(train_blocks)} training blocks written "
                         f"once ({how}) {spent}, shared by every compression's distillation arm and not counted "
                         f"in its train columns")
        for kind in s.compressions.split(","):
            pruned, what = compress(kind, teacher, score_batches, s)
            if pruned is None:
                notes.append(f"{kind}: not measured: {what}")
                continue
            pruned.to(device).eval()
            logger.warning("%s: %s", kind, what)
            rows.append(dict(compression=kind, model=f"pruned ({what})", module=pruned,
                             ppl=evaluate(pruned, tokenizer, corpora, s)))
            logger.warning("row %s", json.dumps({k: v for k, v in rows[-1].items() if k != "module"}))
            for arm in s.arms(kind):
                student = copy.deepcopy(pruned)
                stats = heal(arm, student, teacher, s, train_blocks, Path(tmp), cache)
                label = s.distill_label if arm == "distill" else "healed: LM fine-tuning (no teacher)"
                rows.append(dict(compression=kind, model=label, module=student, **stats,
                                 ppl=evaluate(student, tokenizer, corpora, s)))
                logger.warning("row %s", json.dumps({k: v for k, v in rows[-1].items() if k != "module"}))
            distilled = next((r["module"] for r in rows if r["compression"] == kind
                              and r["model"] == s.distill_label), None)
            if s.quantize and distilled is not None:
                for mode in ("w8a16", "w8a8" if s.w8a8 == "smoothquant+gptq" else "w8a8-rtn"):
                    start = time.perf_counter()
                    q = quantized(distilled, mode, calib)
                    rows.append(dict(compression=kind, model=s.quant_label(mode), module=q,
                                     quant_s=time.perf_counter() - start, ppl=evaluate(q, tokenizer, corpora, s)))
        heal_table.measure_sizes(rows, Path(tmp), s)
    return rows, notes, model_name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a short run (layers only, 60 steps of 4 x 256)")
    size.add_argument("--tiny", action="store_true", help="tiny in-process Llama on synthetic text (tests)")
    size.add_argument("--preset", choices=("full", "cpu", "gpu"), default=None,
                      help="full: the goal's budget; cpu: what fits a 2-core CPU in about 90 CPU-minutes; gpu")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None,
                   help="cuda: the GPU preset (unless --quick / --tiny); default cpu")
    p.add_argument("--output", default=None,
                   help="markdown path (default benchmarks/heal.md for the full and GPU presets, a temporary "
                        "file for --quick / --tiny: they never overwrite the published table)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON to stdout")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a HealSettings field, e.g. --set steps=200")
    p.add_argument("--cache-only", action="store_true", help="only write the teacher cache to --set cache_dir=DIR")
    p.add_argument("--rows-json", help="also write the run (rows, notes, settings) as JSON here, for --merge")
    p.add_argument("--merge", nargs="+", metavar="RUN.json",
                   help="render one table from runs of the same budget written with --rows-json (e.g. the "
                        "distillation and the fine-tuning arms run on two cores at once); trains nothing")
    args = p.parse_args(argv)
    if args.preset and args.device and (args.preset == "gpu") != (args.device == "cuda"):
        p.error(f"--preset {args.preset} and --device {args.device} disagree; drop one")
    return args


def output_path(args, settings: HealSettings) -> Path:
    """``--output``, else ``benchmarks/heal.md`` for the full and GPU presets, else a temporary file: a
    ``--quick`` or ``--tiny`` run never overwrites the published table unless asked to by name."""
    from hf_compress.evaluation import report_path

    published = ROOT / "benchmarks" / "heal.md"
    smoke = settings.preset in ("quick", "tiny")
    if smoke and args.output is not None and Path(args.output).resolve() == published.resolve():
        raise SystemExit(f"bench_heal: `--output` must not be the published table for a --{settings.preset} run, "
                         f"got {args.output!r}; give another path or run a full preset (--preset cpu)")
    return report_path(args.output, published, smoke=smoke)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    try:
        settings = make_settings(args)
    except ValueError as exc:
        raise SystemExit(f"bench_heal: {exc}") from None
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_heal: `device` cuda was asked but torch sees no CUDA device; use --device cpu")
    out = output_path(args, settings)
    if args.merge:
        try:
            rows, notes, settings, model_name, context = heal_table.merge_runs(args.merge)
        except ValueError as exc:
            raise SystemExit(f"bench_heal: {exc}") from None
        return _publish(args, out, rows, notes, settings, model_name, context)
    if args.cache_only:
        return _cache_only(settings, args.tiny)
    started, load_before, wall = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg(), time.perf_counter()
    rows, notes, model_name = run(settings, args.tiny)
    context = dict(started=started, load_before=load_before, load_after=os.getloadavg(),
                   wall_s=time.perf_counter() - wall, threads=torch.get_num_threads(),
                   command=" ".join(["python scripts/bench_heal.py", *(argv if argv is not None else sys.argv[1:])]))
    if args.rows_json:
        heal_table.dump_run(args.rows_json, rows, notes, settings, model_name, context)
    return _publish(args, out, rows, notes, settings, model_name, context)


def _cache_only(s: HealSettings, tiny: bool) -> int:
    """``--cache-only``: the teacher cache of this budget's training blocks, written to ``cache_dir``."""
    if not s.cache_dir:
        raise SystemExit("bench_heal: --cache-only needs a folder: add --set cache_dir=DIR")
    teacher, tokenizer, corpora, _ = heal_data.setup(s, tiny)
    blocks, _ = heal_data.run_blocks(tokenizer, corpora, s)
    cost = heal_data.cache_teacher(teacher.to(s.device), tokenizer, s, blocks, Path(s.cache_dir))
    logger.warning("teacher cache in %s: %.1f CPU-min (%.1f wall-min)", s.cache_dir, cost["cache_cpu_s"] / 60,
                   cost["cache_wall_s"] / 60)
    return 0


def _publish(args, out: Path, rows, notes, settings, model_name, context) -> int:
    from hf_compress.evaluation import write_report

    text = heal_table.render(rows, notes, settings, model_name, context)
    write_report(out, text)
    logger.warning("wrote %s", out)
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "module"} for r in rows], indent=1))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
