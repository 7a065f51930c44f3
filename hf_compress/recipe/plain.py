"""Limits on the plain data of a recipe (as ``yaml.safe_load`` and ``--set`` give it), checked first.

YAML anchors let a few hundred bytes expand into billions of values (an "anchor bomb"); deep nesting makes
recursive code fail with ``RecursionError``; ``.nan`` / ``.inf`` are valid YAML floats that no setting of
hf_compress accepts. :func:`check_plain_data` walks the data once, counting every value as expanded, and
stops at the first problem with a :class:`~hf_compress.errors.RecipeError` naming the key path.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import RecipeError

__all__ = ["MAX_VALUES", "MAX_DEPTH", "MAX_STRING", "check_plain_data"]

MAX_VALUES = 100_000  # every mapping key, value and list item, counted as expanded (anchors included)
MAX_DEPTH = 32  # nesting levels of mappings and lists
MAX_STRING = 1_000_000  # characters of one string


def check_plain_data(raw: Any, root: str = "") -> None:
    """Raise :class:`RecipeError` for more than :data:`MAX_VALUES` values, nesting deeper than
    :data:`MAX_DEPTH`, a string longer than :data:`MAX_STRING`, a key that is not a string or an integer, or a NaN / infinite
    number anywhere in ``raw``."""
    count = 0
    stack = [(raw, root, 0)]
    while stack:  # iterative: deep nesting cannot raise RecursionError here
        node, path, depth = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise RecipeError(
                f"the recipe expands to more than {MAX_VALUES:,} values (YAML anchors/aliases are expanded); "
                f"write it out without repeated aliases"
            )
        if depth > MAX_DEPTH:
            raise RecipeError(f"{path or 'recipe'}: nested deeper than {MAX_DEPTH} levels; flatten it")
        if isinstance(node, float) and not math.isfinite(node):
            raise RecipeError(f"{path or 'recipe'}: must be a finite number, got {node!r}")
        if isinstance(node, str) and len(node) > MAX_STRING:
            raise RecipeError(f"{path or 'recipe'}: a string of {len(node):,} characters; the limit is {MAX_STRING:,}")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise RecipeError(f"{path or 'recipe'}: keys must be strings or integers, got {key!r}")
                stack.append((value, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
