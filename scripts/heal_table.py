"""Sizes, side-by-side latency and the markdown table of ``scripts/bench_heal.py``.

Recovered share of the gap, per held-out corpus, in log-perplexity:
``(ln ppl_pruned - ln ppl_x) / (ln ppl_pruned - ln ppl_original)`` (1 = all of the quality is back, 0 = none,
negative = worse than the pruned model); undefined (``—``) when pruning cost under 1% perplexity.
"""

from __future__ import annotations

import copy
import math
import shutil
from pathlib import Path

import torch

MIN_GAP = math.log(1.01)  # below a 1% perplexity cost the share is noise over a tiny denominator


def recovered(ppl_original: float, ppl_pruned: float, ppl_x: float) -> float | None:
    """Recovered share of the log-perplexity gap (see the module docstring)."""
    if not all(math.isfinite(p) and p > 0 for p in (ppl_original, ppl_pruned, ppl_x)):
        return None
    gap = math.log(ppl_pruned) - math.log(ppl_original)
    if gap < MIN_GAP:
        return None
    return (math.log(ppl_pruned) - math.log(ppl_x)) / gap


def measure_sizes(rows: list[dict], work: Path, s) -> None:
    """Parameters, checkpoint bytes and CPU latency (1 x 256 tokens, every row's model interleaved with the
    original in one process, fp32 / int8 on the CPU) of every row, written into the rows."""
    from hf_compress.evaluation import checkpoint_bytes, latency_side_by_side, param_count

    models = {}
    for i, row in enumerate(rows):
        module = row["module"]
        row["params"] = param_count(module)
        folder = work / f"size-{i}"
        module.save_pretrained(folder)
        row["bytes"] = checkpoint_bytes(folder)
        shutil.rmtree(folder)
        models[i] = module if next(module.parameters()).device.type == "cpu" else copy.deepcopy(module).cpu()
    length = min(256, s.seq_len * 2, rows[0]["module"].config.max_position_embeddings)
    vocab = rows[0]["module"].config.vocab_size
    inputs = {"input_ids": torch.randint(3, vocab, (1, length), generator=torch.Generator().manual_seed(0))}
    with torch.inference_mode():
        latency = latency_side_by_side(models, inputs, repeats=s.latency_repeats, warmup=1)
    for i, row in enumerate(rows):
        row["latency_s"] = latency[i]
        row["latency_ratio"] = latency[i] / latency[0]
    rows[0]["latency_shape"] = tuple(inputs["input_ids"].shape)


def _f(value, spec: str) -> str:
    if value is None:
        return "—"
    if spec == "ppl":
        return f"{value:.2f}" if value < 1e4 else f"{value:.2g}"
    return format(value, spec)


def verdicts(rows: list[dict]) -> list[str]:
    """One line per compression: the goal (distillation recovers >= 70% of the gap and beats fine-tuning on
    both held-out corpora), checked on the numbers of this run."""
    lines = []
    for kind in dict.fromkeys(r["compression"] for r in rows if r["compression"] != "-"):
        arms = {r["model"]: r for r in rows if r["compression"] == kind}
        ft = next((r for m, r in arms.items() if m.startswith("healed: LM fine-tuning")), None)
        for name, kd in arms.items():  # every distillation arm (pure KD, KD + LM loss) of a merged table
            if not name.startswith("healed: distillation"):
                continue
            shares = kd["recovered"]
            met = all(v is not None and v >= 0.7 for v in shares.values())
            share_txt = ", ".join(f"{c} {_f(v, '.0%')}" for c, v in shares.items())
            arm = name.removeprefix("healed: ")
            line = (f"- **{kind}**: {arm} recovered {share_txt} of the log-perplexity gap (goal ≥ 70%: "
                    f"{'met' if met else 'not met'})")
            if ft is not None:
                beats = all(kd["ppl"][c] < ft["ppl"][c] for c in kd["ppl"])
                ppl_txt = ", ".join(f"{c} {kd['ppl'][c]:.2f} vs {ft['ppl'][c]:.2f}" for c in kd["ppl"])
                line += (f"; it {'beats' if beats else 'does not beat'} LM fine-tuning on both held-out corpora "
                         f"(perplexity, distilled vs fine-tuned: {ppl_txt})")
            lines.append(line + ".")
    # issue 14's goal, width beats depth once healed: per distillation arm (a mixed-loss run has its own label)
    for label in dict.fromkeys(r["model"] for r in rows if r["model"].startswith("healed: distillation")):
        distilled = {r["compression"]: r for r in rows if r["model"] == label}
        if "layers" not in distilled or "width" not in distilled:
            continue
        depth, width = distilled["layers"], distilled["width"]
        beats = all(width["ppl"][c] < depth["ppl"][c] for c in width["ppl"])
        ppl_txt = ", ".join(f"{c} {width['ppl'][c]:.2f} vs {depth['ppl'][c]:.2f} "
                            f"({width['ppl'][c] / depth['ppl'][c] - 1:+.1%})" for c in width["ppl"])
        lines.append(f"- **width vs depth after the same {label.removeprefix('healed: ')}** (goal: width lower on "
                     f"both corpora): {'met' if beats else 'not met'} (perplexity, width vs depth: {ppl_txt}).")
    return lines


def render(rows: list[dict], notes: list[str], s, model_name: str, ctx: dict) -> str:
    corpora = list(rows[0]["ppl"])
    original = rows[0]["ppl"]
    pruned = {}
    for r in rows:
        if r["model"].startswith("pruned"):
            pruned[r["compression"]] = r["ppl"]
        base = pruned.get(r["compression"])
        r["recovered"] = {c: recovered(original[c], base[c], r["ppl"][c]) if base else None for c in corpora}
    head = ["compression", "model", "params (M)", "checkpoint MiB", "CPU latency vs original"]
    head += [f"{c} ppl" for c in corpora] + [f"recovered ({c})" for c in corpora]
    head += ["tokens trained", "train CPU-min", "train wall-min"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["compression"], r["model"], _f(r["params"] / 1e6, ".1f"), _f(r["bytes"] / 2**20, ".1f"),
                 _f(r["latency_ratio"], ".2f") + "×"]
        cells += [_f(r["ppl"][c], "ppl") for c in corpora] + [_f(r["recovered"][c], ".0%") for c in corpora]
        cpu, wall = r.get("train_cpu_s"), r.get("train_wall_s")
        cells += [_f(r.get("tokens"), ","), _f(cpu and cpu / 60, ".1f"), _f(wall and wall / 60, ".1f")]
        lines.append("| " + " | ".join(cells) + " |")
    la, lb = ctx["load_after"], ctx["load_before"]
    budget = (f"{s.steps} steps × {s.batch_size} × {s.seq_len} tokens = {s.tokens:,} tokens per arm, AdamW lr "
              f"{s.learning_rate:g}, cosine schedule, {s.warmup:.0%} warm-up, "
              f"{'bf16 autocast' if s.bf16 else 'fp32 (bf16 autocast off: not native on this device)'}, device "
              f"{s.device}; distillation: forward KL at τ={s.temperature:g} from the original model ("
              f"{f'its top-{s.top_k} logits cached once' if s.teacher_cache else 'live teacher'})"
              f"{f' + {s.alpha_task:g} × the LM loss on the same blocks' if s.alpha_task else ''}; fine-tuning: the "
              f"model's own LM loss on the same blocks")
    header = [
        f"## Healing {model_name} (`{s.preset}` preset)", "",
        f"`{ctx['command']}` — started {ctx['started']}, {ctx['wall_s'] / 60:.1f} min wall in all, "
        f"{ctx['threads']} torch thread(s), load average {lb[0]:.1f} before and {la[0]:.1f} after "
        f"(2-core machine shared with other jobs: compare CPU-minutes and ratios, not wall time).", "",
        f"Budget: {budget}. Held-out perplexity: the first {s.eval_tokens:,} tokens of each corpus's held-out "
        f"split in {s.eval_window}-token windows, fp32. Latency: median of {s.latency_repeats} forwards of "
        f"{rows[0].get('latency_shape')} tokens on the CPU, every model interleaved with the original.", "",
    ]
    return "\n".join(header + lines + [""] + verdicts(rows) + [f"- {n}" for n in notes]) + "\n"


# ------------------------------------------------------------------ runs split over processes (--merge)
SAME_BUDGET = ("compressions", "layer_fraction", "head_fraction", "width_fraction", "width_match", "steps",
               "batch_size", "seq_len", "learning_rate", "warmup", "temperature", "top_k", "calib_texts",
               "eval_tokens", "eval_window", "bf16", "device", "seed")


def dump_run(path: str, rows: list[dict], notes: list[str], s, model_name: str, ctx: dict) -> None:
    """One run as JSON (its rows without the modules), for ``merge_runs``."""
    import dataclasses
    import json

    run = dict(rows=[{k: v for k, v in r.items() if k != "module"} for r in rows], notes=notes,
               settings=dataclasses.asdict(s), model=model_name, context=ctx)
    Path(path).write_text(json.dumps(run, indent=1), encoding="utf-8")


def merge_runs(paths: list[str]):
    """(rows, notes, settings, model name, context) of one table from runs of the same budget: the first run's
    rows, then every other run's rows that it lacks, each after the rows of its compression. The original and
    pruned models must measure the same in every run (they are rebuilt deterministically); a different budget
    or model is refused."""
    import json

    from heal_settings import HealSettings

    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    first = runs[0]
    rows, notes = list(first["rows"]), list(first["notes"])
    for path, run in zip(paths[1:], runs[1:]):
        diff = [k for k in SAME_BUDGET if run["settings"][k] != first["settings"][k]]
        if diff or run["model"] != first["model"]:
            raise ValueError(f"`--merge` runs must share the model and budget, got {path!r} differing in "
                             f"{', '.join(diff) or 'model'}; re-run it with the first run's --set values")
        have = {(r["compression"], r["model"]): r for r in rows}
        for r in run["rows"]:
            key = (r["compression"], r["model"])
            if key in have:
                if key[1] == "original" or key[1].startswith("pruned"):
                    off = [c for c in r["ppl"] if not math.isclose(r["ppl"][c], have[key]["ppl"][c], rel_tol=1e-4)]
                    if off:
                        raise ValueError(f"`--merge` runs must start from the same models, got {key[1]!r} of "
                                         f"{path!r} at a different {', '.join(off)} perplexity")
                continue
            last = max(i for i, x in enumerate(rows) if x["compression"] == r["compression"])
            rows.insert(last + 1, r)
            have[key] = r
        notes += [n for n in run["notes"] if n not in notes]
    ctxs = [r["context"] for r in runs]
    context = dict(ctxs[0], command=" + ".join(c["command"] for c in ctxs), wall_s=max(c["wall_s"] for c in ctxs),
                   load_after=ctxs[-1]["load_after"], started=min(c["started"] for c in ctxs))
    settings = HealSettings(**{**first["settings"], "distill": True})
    notes.append(f"merged from {len(runs)} processes run side by side ({', '.join(Path(p).name for p in paths)}); "
                 f"latency ratios are each process's own side-by-side measurement against the original")
    return rows, notes, settings, first["model"], context
