"""``hf-compress``: run | validate | inspect | bench | auto | env | cache-teacher.

Exit status: 0 on success, 2 on usage or recipe errors (one line on stderr, no traceback), 1 on a runtime
failure (one line; ``-v`` adds the traceback), 3 when ``auto`` misses its target (the best found is
written). Logs and progress bars go to stderr, ``--json`` to stdout.
Each command is an ``_add_x_parser(subparsers)`` / ``_cmd_x(args) -> int`` pair; heavy imports happen inside
the command functions so that ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import traceback

from ._version import __version__
from .tasks import RECIPE_TASKS

__all__ = ["main", "build_parser"]

logger = logging.getLogger("hf_compress")


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text!r}")
    return int(text)


def _add_run_parser(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run a recipe and write a Hub-ready folder",
        description="Run RECIPE: load the model, apply the stages, measure, save atomically.",
    )
    p.add_argument("recipe", help="path of a YAML recipe")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe value, e.g. --set stages.1.distill.max_steps=10 (repeatable)",
    )
    p.add_argument("--output-dir", help="write here instead of the recipe's output_dir")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the folder to this Hub repo afterwards")
    p.add_argument(
        "--dry-run", action="store_true", help="validate and print the resolved recipe; load nothing"
    )
    p.add_argument("--json", action="store_true", help="print the measured rows as JSON on stdout")
    p.set_defaults(func=_cmd_run)


def _cmd_run(args) -> int:
    from .recipe.schema import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.output_dir:
        recipe.output_dir = args.output_dir
    if args.push_to_hub:
        recipe.push_to_hub = args.push_to_hub
    from .recipe.runner import check_destination, run_recipe

    check_destination(recipe)  # output folder and repo id, before anything is loaded
    if args.dry_run:
        _print_json(recipe.to_dict()) if args.json else sys.stdout.write(recipe.to_yaml())
        return 0
    with contextlib.redirect_stdout(sys.stderr):  # stray prints (the Trainer's metrics dict) keep stdout clean
        result = run_recipe(recipe, token=os.environ.get("HF_TOKEN"))
    if args.json:  # rows: after each stage (mem_bytes); measured: base vs compressed, as bench
        _print_json({"output_dir": str(result.output_dir), "rows": result.rows, "measured": result.measured,
                     "stages": result.records, "seconds": result.seconds})
    else:
        sys.stdout.write(result.table + "\n")
    logger.info("wrote %s in %.0f s (%.0f CPU-seconds)", result.output_dir, result.seconds, result.cpu_seconds)
    return 0


def _add_validate_parser(sub) -> None:
    p = sub.add_parser(
        "validate",
        help="check a recipe without loading anything",
        description="Check RECIPE's keys, types and stage order; exit 2 naming the first problem.",
    )
    p.add_argument("recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_validate)


def _cmd_validate(args) -> int:
    from .recipe.schema import load_recipe

    from .recipe.runner import check_destination

    check_destination(recipe := load_recipe(args.recipe, args.overrides))
    stages = " -> ".join(s.name for s in recipe.stages) or "no stages"
    sys.stdout.write(f"ok: {args.recipe}: {stages}; output_dir {recipe.output_dir}\n")
    return 0


def _add_inspect_parser(sub) -> None:
    p = sub.add_parser(
        "inspect",
        help="describe a checkpoint folder (no model is loaded)",
        description="Layers, heads, int8 modules, sparsity, size and applied compression of PATH.",
    )
    p.add_argument("path", help="a checkpoint folder or a bundled model asset name (minilm, smollm2, mpnet)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)


def _cmd_inspect(args) -> int:
    from pathlib import Path

    from .assets import MODEL_ASSETS, get_asset
    from .io.checkpoint import describe, format_description

    path = args.path
    if path in MODEL_ASSETS and not Path(path).exists():  # a bundled model asset name, as bench takes
        path = get_asset(path)
    info = describe(path)
    if args.json:
        _print_json(info)
    else:
        sys.stdout.write(format_description(info) + "\n")
    return 0


def _add_bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="size, CPU latency and quality of a model, optionally against a baseline",
        description="Measure MODEL (folder or bundled asset name) on held-out Wikipedia summaries.",
    )
    p.add_argument("model")
    p.add_argument("--baseline", help="a second model measured side by side; quality is agreement with it")
    p.add_argument(
        "--task", default=None, choices=RECIPE_TASKS, help="default: the recorded task, else from config.json"
    )
    p.add_argument("--samples", type=_positive_int, default=64, help="held-out texts (default 64)")
    p.add_argument("--repeats", type=_positive_int, default=7, help="latency repeats; the median is reported")
    p.add_argument(
        "--data", help="a .txt/.json/.jsonl file of texts instead of the bundled Wikipedia summaries"
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow folders that ship modeling code (physically pruned BERT/GPT-2 heads)",
    )
    p.add_argument("--eager-only", action="store_true", help="int8: skip the compiled row (no torch.compile)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    from .recipe.bench import bench

    rows = bench(
        args.model,
        baseline=args.baseline,
        task=args.task,
        samples=args.samples,
        repeats=args.repeats,
        texts_file=args.data,
        trust_remote_code=args.trust_remote_code,
        compiled=not args.eager_only,
    )
    if args.json:
        _print_json(rows)
    else:
        from .io.model_card import format_results_table

        sys.stdout.write(format_results_table(rows) + "\n")
    return 0


def _add_auto_parser(sub) -> None:  # its _cmd_auto is recipe.auto.cmd_auto: cli.py is at its 300 lines
    from .recipe.auto import add_auto_parser

    add_auto_parser(sub, print_json=_print_json)


def _add_env_parser(sub) -> None:
    p = sub.add_parser("env", help="library versions, CPU threads and prepared offline assets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_env)


def _cmd_env(args) -> int:
    import torch

    from .assets import ASSETS, asset_cache_dir
    from .io.checkpoint import library_versions, optional_versions

    cache = asset_cache_dir()
    info = {
        **library_versions(),
        **optional_versions(),
        "cuda": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
        "hf_hub_offline": os.environ.get("HF_HUB_OFFLINE", "0"),
        "asset_cache": str(cache),
        "assets_prepared": sorted(n for n in ASSETS if (cache / n).exists()),
    }
    if args.json:
        _print_json(info)
    else:
        sys.stdout.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")
    return 0


def _add_cache_teacher_parser(sub) -> None:  # its command is distillation.cache_cli: cli.py is at 300 lines
    from .distillation.cache_cli import add_cache_teacher_parser

    add_cache_teacher_parser(sub, print_json=_print_json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-compress",
        description="Distil, prune, sparsify and int8-quantize "
        "Hugging Face models into Hub-loadable checkpoints.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    parser.add_argument("--version", action="version", version=f"hf-compress {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_run_parser, _add_validate_parser, _add_inspect_parser, _add_bench_parser, _add_auto_parser,
                _add_env_parser, _add_cache_teacher_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hf-compress``; returns the exit status (also when argparse exits)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, message already printed)
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from .errors import CheckpointError, HfCompressError, RecipeError

    try:
        return args.func(args)
    except (RecipeError, CheckpointError) as exc:  # bad recipe, or a folder that cannot be written / read
        if args.verbose:
            traceback.print_exc()
        sys.stderr.write(f"hf-compress {args.command}: error: {exc}\n")
        return 2
    except (HfCompressError, Exception) as exc:  # noqa: BLE001  runtime failure: one line, exit 1
        if args.verbose:
            traceback.print_exc()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"hf-compress {args.command}: failed: {type(exc).__name__}: {msg}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
