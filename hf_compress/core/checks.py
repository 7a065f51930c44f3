"""Small value checks shared by every config's ``__post_init__``: "`x` must be ..., got ..."."""

from __future__ import annotations

import copy
import math
import re
from dataclasses import fields

from ..errors import HfCompressError

__all__ = ["check_fraction", "check_positive", "check_choice", "check_finite", "check_finite_weights",
           "check_ignore", "part_config", "check_part_config"]


def _fail(error: type[Exception], msg: str) -> None:
    raise error(msg)


def check_finite(name: str, value, error: type[Exception] = HfCompressError) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        _fail(error, f"`{name}` must be a finite number, got {value!r}")


def check_fraction(name: str, value: float, error: type[Exception] = HfCompressError) -> None:
    check_finite(name, value, error)
    if not 0.0 < value < 1.0:
        _fail(error, f"`{name}` must be in (0, 1), got {value!r}")


def check_positive(name: str, value, error: type[Exception] = HfCompressError) -> None:
    if value is None:
        return
    check_finite(name, value, error)
    if value <= 0:
        _fail(error, f"`{name}` must be > 0, got {value!r}")


def check_choice(name: str, value: str, allowed: tuple[str, ...], error: type[Exception] = HfCompressError):
    if value not in allowed:
        _fail(error, f"`{name}` must be one of {', '.join(allowed)}, got {value!r}")


def check_ignore(patterns, error: type[Exception] = HfCompressError) -> list[str]:
    """``ignore`` patterns (module names, class names, ``re:`` regexes) as a list; ``None`` is ``[]``. Each
    ``re:`` regex is compiled here, once, so a bad one is a one-line error before anything changes."""
    if patterns is None:
        return []
    if isinstance(patterns, (str, bytes, dict)) or not hasattr(patterns, "__iter__"):
        _fail(error, f"`ignore` must be a list of module names, class names or 're:' regexes, got {patterns!r}")
    patterns = list(patterns)
    for p in patterns:
        if not isinstance(p, str):
            _fail(error, f"`ignore` must hold module names, class names or 're:' regexes, got {p!r} in "
                         f"{patterns!r}")
        problem = _regex_error(p[3:]) if p.startswith("re:") else None
        if problem:
            _fail(error, f"`ignore` pattern {p!r} is not a valid regex ({problem}); fix or remove it")
    return patterns


def _regex_error(regex: str) -> str | None:
    try:
        re.compile(regex)
    except re.error as exc:
        return str(exc)
    return None


def part_config(stage_config, part_cls, **extra):
    """``part_cls`` built from the stage config's fields of the same names (copied), plus ``extra``.

    A stage config declares its method's fields (so the recipe schema knows them) and a few of its own
    (``num_batches``, how to rank); one mapping by name keeps the two from drifting apart.
    """
    names = {f.name for f in fields(part_cls)}
    values = {f.name: copy.copy(getattr(stage_config, f.name)) for f in fields(stage_config) if f.name in names}
    return part_cls(**values, **extra)


def check_part_config(stage_config, part_cls, error: type[Exception], **extra) -> None:
    """Validate a stage config by building its method's config: the method's own check, raised as ``error``
    (a recipe stage reports :class:`~hf_compress.errors.RecipeError`, whatever the method raises)."""
    try:
        part_config(stage_config, part_cls, **extra)
    except HfCompressError as exc:
        raise error(str(exc)) from None


def check_finite_weights(model, error: type[Exception] = HfCompressError) -> None:
    """Raise naming the first floating-point parameter or buffer of ``model`` holding NaN or infinity."""
    import torch

    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            _fail(error, f"weight {name} holds NaN or infinity; nothing was saved (training diverged: lower "
                         f"the learning rate or check the recipe's numbers)")
