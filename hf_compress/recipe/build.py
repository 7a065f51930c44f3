"""Build a dataclass from a plain mapping, strictly: unknown keys, missing keys and wrong types are
:class:`~hf_compress.errors.RecipeError` naming the key path and, for a typo, the closest valid key."""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, fields
from typing import Any

from ..errors import RecipeError

__all__ = ["build_dataclass", "check_type"]


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(arg)}"
    if origin is dict or tp is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_type(value: Any, tp: Any) -> bool:
    """Whether ``value`` (plain YAML data) fits the annotation ``tp`` (int is accepted for float)."""
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(check_type(value, a) for a in typing.get_args(tp))
    if origin is list:
        (arg,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(check_type(v, arg) for v in value)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def build_dataclass(cls: type, data: Any, path: str, nested: dict[str, type] | None = None):
    """``cls(**data)`` after checking keys and types; ``nested`` maps field names to dataclasses built
    recursively from sub-mappings. ``__post_init__`` errors are re-raised with the key path in front (with
    the field's key when the error names one in its ``key`` attribute)."""
    prefix = f"{path}: " if path else ""
    dot = f"{path}." if path else ""
    if not isinstance(data, dict):
        raise RecipeError(
            f"{prefix}must be a mapping of {', '.join(f.name for f in fields(cls))}, "
            f"got {type(data).__name__} {data!r}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    nested = nested or {}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            match = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean `{match[0]}`?" if match else f"; allowed keys: {', '.join(names)}"
            raise RecipeError(f"{dot}{key}: unknown key `{key}`{hint}")
        if key in nested and isinstance(value, dict):
            value = build_dataclass(nested[key], value, f"{dot}{key}")
        elif not check_type(value, hints[key]):
            raise RecipeError(
                f"{dot}{key}: must be {_type_name(hints[key])}, got {type(value).__name__} {value!r}"
            )
        kwargs[key] = value
    for f in fields(cls):
        if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in kwargs:
            raise RecipeError(f"{dot}{f.name}: missing required key `{f.name}`")
    try:
        return cls(**kwargs)
    except RecipeError as exc:
        key = getattr(exc, "key", None)
        raise RecipeError(f"{dot}{key}: {exc}" if key else f"{prefix}{exc}") from None
