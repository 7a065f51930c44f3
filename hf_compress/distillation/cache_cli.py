"""``hf-compress cache-teacher MODEL DATA --output-dir DIR``: the command's parser and function (light imports;
the work is :func:`~.cache.cache_teacher_from_folders`)."""

from __future__ import annotations

import argparse
import functools
import sys

from ..tasks import RECIPE_TASKS

__all__ = ["add_cache_teacher_parser", "cmd_cache_teacher"]


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers such as 2,4, got {text!r}") from None


def add_cache_teacher_parser(sub, print_json) -> None:
    p = sub.add_parser("cache-teacher", help="cache a teacher's top-k logits over a tokenized data set",
                       description="Run MODEL once over DATA (a datasets.save_to_disk folder with input_ids) and "
                       "write its top-k logits (and hidden states) to --output-dir; train from it with "
                       "DistillationTrainer(teacher_cache=DIR, train_dataset=load_from_disk(DATA)). Rerun to resume.")
    p.add_argument("model", help="teacher folder (safetensors)")
    p.add_argument("data", help="tokenized data set folder (datasets.save_to_disk) with an input_ids column")
    p.add_argument("--output-dir", required=True, help="cache folder (created, or continued when it holds one)")
    p.add_argument("--task", default="causal-lm", choices=RECIPE_TASKS)
    p.add_argument("--top-k", type=int, default=32, help="logits kept per token (default 32; 0 = none)")
    p.add_argument("--hidden-layers", default=[], type=_int_list, help="teacher hidden-state indices, e.g. 2,4")
    p.add_argument("--hidden-dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    p.add_argument("--max-length", type=int, default=None, help="truncate rows to this many tokens")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--trust-remote-code", action="store_true", help="allow model folders that ship code")
    p.add_argument("--json", action="store_true", help="print the cache summary as JSON on stdout")
    p.set_defaults(func=functools.partial(cmd_cache_teacher, print_json=print_json))


def cmd_cache_teacher(args, print_json) -> int:
    from .cache import cache_teacher_from_folders

    info = cache_teacher_from_folders(args.model, args.data, args.output_dir, task=args.task, top_k=args.top_k,
                                      hidden_layers=args.hidden_layers, hidden_dtype=args.hidden_dtype,
                                      max_length=args.max_length, batch_size=args.batch_size,
                                      trust_remote_code=args.trust_remote_code)
    if args.json:
        print_json(info)
    else:
        sys.stdout.write("\n".join(f"- {k}: {v}" for k, v in info.items()) + "\n")
    return 0
