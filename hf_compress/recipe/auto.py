"""``hf-compress auto``: plan with :func:`hf_compress.planner.plan_compression`, run the plan's recipe with
:func:`run_recipe`, and add the search (predicted vs measured, the frontier table and plot) to the card.

    >>> result = run_auto("minilm", "wiki-summaries", "speedup=5", output_dir="out/auto")
    >>> result.met, result.plan.stages, result.measured["speedup"]

When no candidate meets the target the best found is still written and ``met`` is False (the CLI exits 3).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .schema import parse_recipe

__all__ = ["AutoResult", "run_auto", "check_auto_options", "add_auto_parser", "cmd_auto", "EXIT_MISSED"]

logger = logging.getLogger(__name__)

EXIT_MISSED = 3  # the plan (the best found) was written but misses the target


@dataclass
class AutoResult:
    plan: object  # hf_compress.planner.Plan
    recipe: dict  # the plan's recipe as plain data
    output_dir: Path | None = None
    measured: dict = field(default_factory=dict)  # the written model, side by side with the base
    run: object = None  # RunResult (None with dry_run)

    @property
    def met(self) -> bool:
        return bool(self.plan.met)

    def to_dict(self) -> dict:
        return {**self.plan.to_dict(), "latency_error_pct": latency_error(self.plan), "recipe": self.recipe,
                "output_dir": str(self.output_dir) if self.output_dir else None}

    def summary(self) -> str:
        """The frontier, the plan's recipe and (after a run) the card's table, as the CLI prints them."""
        from ..planner import format_frontier

        parts = [self.plan.message, format_frontier(self.plan.rows, self.plan.target, _key(self.plan)),
                 yaml.safe_dump(self.recipe, sort_keys=False)]
        if self.run is not None:
            parts.append(self.run.table)
            err = latency_error(self.plan)
            if err is not None:
                parts.append(f"latency prediction error: {err:+.1f}% of the measured speed-up")
        return "\n\n".join(parts)


def check_auto_options(target, top_k=3, heal_steps=0, distill_steps=0, max_drop=None, minutes=None,
                       max_samples=None, eval_samples=1, eval_max_length=1, **_):
    """The parsed :class:`~hf_compress.planner.Target`, or a one-line error naming the bad option."""
    from ..errors import HfCompressError
    from ..planner import parse_target

    target = parse_target(target) if isinstance(target, str) else target
    for name, value, low in (("top-k", top_k, 1), ("heal-steps", heal_steps, 0), ("distill-steps", distill_steps, 0),
                             ("max-samples", max_samples, 1), ("eval-samples", eval_samples, 1),
                             ("eval-max-length", eval_max_length, 1)):
        if value is not None and (not isinstance(value, int) or value < low):
            raise HfCompressError(f"--{name} must be an integer >= {low}, got {value!r}")
    if max_drop is not None and not 0 <= max_drop < 1:
        raise HfCompressError(f"--max-drop must be a quality drop in [0, 1), got {max_drop!r}")
    if minutes is not None and not minutes > 0:
        raise HfCompressError(f"--minutes must be > 0, got {minutes!r}")
    return target


def _base_recipe(model: str, data: str, task: str, output_dir: str, max_samples, eval_samples: int,
                 eval_max_length: int, seed: int, evaluate) -> dict:
    raw = {
        "model": model, "task": task, "output_dir": str(output_dir),
        "data": {"name": data, **({"max_samples": max_samples} if max_samples else {})},
        "stages": [], "eval_samples": eval_samples, "eval_max_length": eval_max_length, "seed": seed,
    }
    if evaluate:
        raw["evaluate"] = list(evaluate)
    return raw


def _measured(final: list[dict], quality: str) -> dict:
    base, mine = final
    out = {"params": mine.get("params"), "params_ratio": mine["params"] / base["params"]}
    if mine.get("disk_bytes") is not None:
        out["mib"] = mine["disk_bytes"] / 2**20
    for key in ("speedup", "latency_ms"):
        if mine.get(key) is not None:
            out[key] = mine[key]
    if base.get("latency_ms") is not None:
        out["base_latency_ms"] = base["latency_ms"]
    if mine.get(quality) is not None:
        out["quality"] = mine[quality]
    return out


def latency_error(plan) -> float | None:
    """Predicted speed-up (random weights of the shape) vs measured (the written model), in % of measured."""
    pred, meas = plan.predicted.get("speedup"), plan.measured.get("speedup")
    return None if not pred or not meas else 100.0 * (pred - meas) / meas


def card_section(plan) -> str:
    from ..planner import format_frontier

    def cells(d: dict) -> str:
        vals = [d.get("params_ratio"), d.get("mib"), d.get("latency_ms"), d.get("speedup"), d.get("quality")]
        return " | ".join("–" if v is None else f"{v:.3f}" if i in (0, 4) else f"{v:.2f}" for i, v in enumerate(vals))

    err = latency_error(plan)
    lines = [
        "## How this plan was chosen (`hf-compress auto`)", "",
        f"Target `{plan.target}`: {plan.message}. {len(plan.rows)} candidates explored in {plan.seconds:.0f} s.", "",
        "| | params (of base) | MiB | latency ms | speed-up | quality |", "|---|---|---|---|---|---|",
        f"| predicted (random weights of this shape vs a random base, side by side) | {cells(plan.predicted)} |",
        f"| measured (this checkpoint vs the base, side by side) | {cells(plan.measured)} |", "",
        "Predicted MiB are the weights in memory, measured MiB the safetensors files; predicted quality is "
        "after the planner's short heal, measured after the full distillation.",
    ]
    if err is not None:
        lines.append(f"Latency prediction error: {err:+.1f}% of the measured speed-up.")
    lines += ["", "Frontier of the search (no other candidate is both further along the target and closer to "
              "the original by the KL proxy):", "", format_frontier(plan.rows, plan.target, _key(plan)), ""]
    lines += [f"- {n}" for n in plan.notes] + ["", "![frontier](frontier.png)", ""]
    return "\n".join(lines)


def _key(plan) -> str:
    from ..planner import Candidate

    return Candidate(**plan.candidate).key


def plot_frontier(plan, path) -> None:
    """Every scored candidate: the target's axis against the KL proxy; the frontier joined, the pick starred."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from ..planner import frontier

    metric = plan.target.metric
    scored = [r for r in plan.rows if r.get("proxy") is not None and r.get(metric) is not None]
    front = frontier(plan.rows, plan.target)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter([r[metric] for r in scored], [r["proxy"] for r in scored], s=14, color="#999999", label="scored")
    ax.plot([r[metric] for r in front], [r["proxy"] for r in front], "o-", color="#3b75af", label="frontier")
    chosen = [r for r in plan.rows if r["key"] == _key(plan) and r.get("proxy") is not None]
    if chosen:
        ax.scatter([chosen[0][metric]], [chosen[0]["proxy"]], marker="*", s=180, color="#d62728", label="chosen")
    ax.axvline(plan.target.value, ls="--", color="#444444", lw=1)
    ax.set_xlabel(metric.replace("_", " "))
    ax.set_ylabel("KL proxy after surgery (lower is better)")
    ax.set_title(f"hf-compress auto: target {plan.target}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_auto(model: str, data: str, target, *, task: str = "feature-extraction", output_dir: str = "out/auto",
             max_drop: float | None = None, minutes: float | None = None, top_k: int = 3, heal_steps: int = 20,
             distill_steps: int = 100, distill: dict | None = None, log: str | None = None, dry_run: bool = False,
             max_samples: int | None = None, eval_samples: int = 128, eval_max_length: int = 128, seed: int = 0,
             evaluate=None, space: dict | None = None, latency_fn=None, progress: bool = True,
             plan=None) -> AutoResult:
    """Plan for ``target`` and (unless ``dry_run``) write the planned model, its card and recipe. ``plan``: a
    :class:`~hf_compress.planner.Plan` made before (e.g. by a ``dry_run`` call with the same options), run
    as it is instead of searching again."""
    import torch

    from ..planner import plan_compression
    from .loading import load_model, load_texts
    from .measure import clip_length, quality_key
    from .runner import run_recipe

    target = check_auto_options(target, top_k, heal_steps, distill_steps, max_drop, minutes, max_samples,
                                eval_samples, eval_max_length)
    raw = _base_recipe(model, data, task, output_dir, max_samples, eval_samples, eval_max_length, seed, evaluate)
    base = parse_recipe(raw)  # model / data / task checked before anything is loaded
    log = log if log is not None else str(Path(output_dir).absolute()) + ".auto-log.jsonl"
    if plan is None:
        torch.manual_seed(seed)
        loaded, tokenizer, _ = load_model(base.model, task, seed)
        train, heldout = load_texts(base.data)
        plan = plan_compression(
            loaded, train, tokenizer=tokenizer, target=target, task=task, heldout=heldout, space=space,
            max_drop=max_drop, top_k=top_k, heal_steps=heal_steps, distill_steps=distill_steps, distill=distill,
            minutes=minutes, log=log, latency_fn=latency_fn, seed=seed,
            max_length=clip_length(loaded, eval_max_length), eval_texts=eval_samples, progress=progress,
        )
        del loaded
    elif str(plan.target) != str(target):
        from ..errors import HfCompressError

        raise HfCompressError(f"`plan` must be a plan for target {target}, got one for {plan.target}")
    recipe = plan.to_recipe(raw["model"], output_dir, data=raw["data"], evaluate=evaluate,
                            eval_samples=eval_samples)
    parsed = parse_recipe(recipe)
    result = AutoResult(plan=plan, recipe=recipe)
    if dry_run:
        return result
    qkey = quality_key(task)

    def extra(folder: Path, final: list[dict]) -> None:
        plan.measured = _measured(final, qkey)
        with (folder / "README.md").open("a", encoding="utf-8") as fh:
            fh.write("\n" + card_section(plan))
        (folder / "plan.json").write_text(json.dumps(plan.to_dict(), indent=2, default=float) + "\n")
        if Path(log).is_file():
            shutil.copyfile(log, folder / "auto-log.jsonl")
        plot_frontier(plan, folder / "frontier.png")

    result.run = run_recipe(parsed, extra=extra)
    result.output_dir, result.measured = result.run.output_dir, plan.measured
    return result


def add_auto_parser(sub, print_json):
    """``hf-compress auto``'s arguments (the CLI's ``_add_x_parser`` half; :func:`cmd_auto` is the other)."""
    p = sub.add_parser(
        "auto",
        help="choose a compression plan for a budget, run it, write model + card + recipe",
        description="Search depth x width x heads x int8 for MODEL under --target, heal the best few, run the "
        "pick's recipe. Exit 3 when no candidate meets the target (the best found is written).",
    )
    p.add_argument("model", help="a bundled asset (minilm, smollm2, mpnet), a local folder or a Hub id")
    p.add_argument("--data", required=True, help="wiki-summaries, snli or a .txt/.json/.jsonl file")
    p.add_argument("--target", required=True, help="speedup=4 | params=0.6 | mib=40 | latency-ms=30")
    p.add_argument("--task", default="feature-extraction")
    p.add_argument("--max-drop", type=float, help="allowed quality drop: pick the fastest/smallest within it")
    p.add_argument("--minutes", type=float, help="time budget of the search (candidates left are noted)")
    p.add_argument("--output-dir", default="out/auto")
    p.add_argument("--log", help="JSON-lines log of measured candidates to resume from (default: beside the output)")
    p.add_argument("--top-k", type=int, default=3, help="candidates healed before the pick (default 3)")
    p.add_argument("--heal-steps", type=int, default=20, help="distillation steps of each heal (default 20)")
    p.add_argument("--distill-steps", type=int, default=100, help="distillation steps of the plan (default 100)")
    p.add_argument("--max-samples", type=int, help="cap on the training / calibration texts")
    for flag, default in (("--eval-samples", 128), ("--eval-max-length", 128), ("--seed", 0)):
        p.add_argument(flag, type=int, default=default)
    p.add_argument("--dry-run", action="store_true", help="plan only: print the plan and its recipe")
    p.add_argument("--json", action="store_true", help="the plan (and measured numbers) as JSON on stdout")
    p.set_defaults(func=lambda args: cmd_auto(args, print_json))
    return p


def cmd_auto(args, print_json) -> int:
    """Exit 0 when the plan meets the target, 2 on a malformed target or option (one line, nothing loaded),
    3 when the best found misses it (still written)."""
    from ..errors import HfCompressError

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command", "verbose", "json")}
    try:
        options["target"] = check_auto_options(**options)
    except HfCompressError as exc:
        sys.stderr.write(f"hf-compress auto: error: {exc}\n")
        return 2
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its metrics; stdout is for --json
        result = run_auto(**options)
    print_json(result.to_dict()) if args.json else sys.stdout.write(result.summary() + "\n")
    if not result.met:
        where = f"; wrote the best found to {result.output_dir}" if result.output_dir else ""
        sys.stderr.write(f"hf-compress auto: target missed: {result.plan.message}{where}\n")
    return 0 if result.met else EXIT_MISSED
