"""Limits on the plain data of a recipe (as ``yaml.safe_load`` and ``--set`` give it), checked first.

YAML anchors let a few hundred bytes expand into billions of values (an "anchor bomb"); deep nesting makes
recursive code fail with ``RecursionError``; ``.nan`` / ``.inf`` are valid YAML floats that no setting of
hf_compress accepts. :func:`check_plain_data` walks the data once, counting every value as expanded, and
stops at the first problem with a :class:`~hf_compress.errors.RecipeError` naming the key path.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ..errors import RecipeError

__all__ = ["MAX_VALUES", "MAX_DEPTH", "MAX_STRING", "MAX_INT", "check_plain_data", "read_yaml", "load_yaml_text"]

MAX_VALUES = 100_000  # every mapping key, value and list item, counted as expanded (anchors included)
MAX_DEPTH = 32  # nesting levels of mappings and lists
MAX_STRING = 1_000_000  # characters of one string (and bytes of a recipe file)
MAX_INT = 2**53  # integers beyond this are not exact as floats and fit no setting


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (plain data only) that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise RecipeError(f"duplicate key `{key}` at line {line}: each key may appear once in a mapping")
            seen.add(key) if isinstance(key, (str, int, float, bool)) else None
        return super().construct_mapping(node, deep=deep)


def load_yaml_text(text: str, where: str) -> Any:
    """Plain data from YAML text (safe: no tags, no objects); one-line :class:`RecipeError` on any problem."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506  a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None
    except RecursionError:
        raise RecipeError(f"{where}: nested deeper than the YAML parser allows; flatten it") from None


def read_yaml(path: Path) -> Any:
    """A recipe file's plain data: UTF-8, at most :data:`MAX_STRING` bytes, strict YAML."""
    data = path.read_bytes()
    if len(data) > MAX_STRING:
        raise RecipeError(f"{path}: {len(data):,} bytes; a recipe may have at most {MAX_STRING:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not a UTF-8 text file (byte {exc.start}); a recipe is YAML text") from None
    return load_yaml_text(text, str(path))


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
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_INT:
            raise RecipeError(f"{path or 'recipe'}: {node} is out of range (at most 2**53 in magnitude)")
        if isinstance(node, str) and len(node) > MAX_STRING:
            raise RecipeError(f"{path or 'recipe'}: a string of {len(node):,} characters; the limit is {MAX_STRING:,}")
        if isinstance(node, dict):
            for key, value in node.items():
                if not isinstance(key, (str, int)) or isinstance(key, bool):
                    raise RecipeError(f"{path or 'recipe'}: keys must be strings or integers, got {key!r}")
                stack.append((value, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(node, (list, tuple)):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
