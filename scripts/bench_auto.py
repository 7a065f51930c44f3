"""``hf-compress auto`` on real models: the plan, what it predicted, what the written model measured.

* ``minilm``: MiniLM-L6 with ``--target speedup=5`` at the demo's distillation budget (150 steps of 32 texts ×
  64 tokens, the same fields as ``recipes/minilm-demo.yaml``), measured like the demo (size, side-by-side
  latency, embedding cosine, topic probe).
* ``smollm2``: SmolLM2-135M with ``--target params=0.75`` (the full space), and with ``--single`` also the
  depth-only, width-only and heads-only spaces at the same heal budget.

Each run writes its plan and measured numbers as JSON to ``--out`` (a temporary file unless given) and logs
the machine load before and after; the tables in ``benchmarks/auto.md`` are assembled from those files.

    flock /tmp/bench.lock nohup python scripts/bench_auto.py minilm --out /tmp/auto-minilm.json &
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

DEMO_DISTILL = {"alpha_hidden": 1.0, "alpha_logits": 0.0, "hidden_loss": "mse", "layer_map": "uniform",
                "batch_size": 32, "max_length": 64, "learning_rate": 2.0e-4, "warmup_steps": 10, "logging_steps": 25}
SINGLE = {"depth": {"heads": (0.0,), "ffn": (0.0,)}, "width": {"keep": (1.0,), "heads": (0.0,)},
          "heads": {"keep": (1.0,), "ffn": (0.0,), "heads": (0.0, 0.25, 0.5, 0.75)}}


def run(name: str, model: str, target: str, task: str, space: dict | None, args, **kwargs) -> dict:
    """Plan first (written to ``--out`` at once: a run cut short still leaves the plan), then run that plan."""
    from hf_compress.recipe.auto import latency_error, run_auto

    load_before, t0, c0 = os.getloadavg()[0], time.perf_counter(), time.process_time()
    common = dict(task=task, output_dir=f"{args.output_root}/{name}", space=space, minutes=args.minutes,
                  top_k=args.top_k, heal_steps=args.heal_steps, seed=0, **kwargs)
    planned = run_auto(model, "wiki-summaries", target, dry_run=True, **common)
    plan_cpu = time.process_time() - c0
    with open(args.out + ".plan.json", "w", encoding="utf-8") as fh:
        json.dump({"name": name, **planned.to_dict(), "plan_seconds": time.perf_counter() - t0,
                   "plan_cpu_seconds": plan_cpu, "load_before": load_before,
                   "load_after_plan": os.getloadavg()[0]}, fh, indent=2, default=float)
    if args.dry_run:
        return planned.to_dict()
    result = run_auto(model, "wiki-summaries", target, plan=planned.plan, **common)
    row = {"name": name, "target": target, **result.to_dict(), "latency_error_pct": latency_error(result.plan),
           "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
           "plan_seconds": result.plan.seconds, "plan_cpu_seconds": plan_cpu, "load_before": load_before, "load_after": os.getloadavg()[0]}
    if result.run is not None:
        row["rows"] = result.run.rows
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", choices=["minilm", "smollm2"])
    p.add_argument("--target", help="default: speedup=5 (minilm), params=0.75 (smollm2)")
    p.add_argument("--out", help="JSON results (default: a temporary file)")
    p.add_argument("--output-root", default="out/bench-auto")
    p.add_argument("--minutes", type=float, default=12.0)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--heal-steps", type=int, default=20)
    p.add_argument("--distill-steps", type=int, default=150)
    p.add_argument("--single", action="store_true", help="smollm2: also the single-method spaces")
    p.add_argument("--spaces", help="smollm2: a comma-separated subset of auto,depth,width,heads to run, in order")
    p.add_argument("--dry-run", action="store_true", help="plan only")
    args = p.parse_args(argv)
    out = args.out = args.out or tempfile.mkstemp(prefix="bench-auto-", suffix=".json")[1]
    results = []
    if args.model == "minilm":
        target = args.target or "speedup=5"  # the outside probes: scripts/compare_models.py on the written folder
        results.append(run(f"minilm-{target.replace('=', '')}", "minilm", target, "feature-extraction", None, args,
                           max_samples=4800, distill_steps=args.distill_steps, distill=DEMO_DISTILL, eval_samples=256,
                           evaluate=["size", "latency", "teacher_agreement"]))
    else:
        spaces = {"auto": None, **(SINGLE if args.single or args.spaces else {})}
        if args.spaces:
            wanted = args.spaces.split(",")
            if not set(wanted) <= set(spaces):
                p.error(f"--spaces must name some of {', '.join(spaces)}, got {args.spaces!r}")
            spaces = {k: spaces[k] for k in wanted}
        target = args.target or "params=0.75"
        for label, space in spaces.items():
            results.append(run(f"smollm2-{target.replace('=', '')}-{label}", "smollm2", target, "causal-lm", space, args,
                               max_samples=2000, distill_steps=args.distill_steps, eval_samples=64,
                               distill={"batch_size": 8, "max_length": 128}, eval_max_length=128,
                               evaluate=["size", "latency", "teacher_agreement", "perplexity"]))  # latency: the
            # measured speed-up the plan's prediction is checked against
            with open(out, "w", encoding="utf-8") as fh:
                json.dump(results, fh, indent=2, default=float)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, default=float)
    print(out)


if __name__ == "__main__":
    main()
