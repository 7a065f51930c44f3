"""The one table of compression methods: each method folder registers a :class:`MethodSpec` on import.

The recipe (stage configs, stage functions, order rules), the model card (tags, ``base_model_relation``)
and the planner read this table; none of them lists methods by hand. Adding a method is one folder under
``hf_compress/methods/`` whose ``__init__.py`` calls :func:`register` (as peft's ``register_peft_method``
or torchao's config -> handler table), or any module a user imports that does the same.

A handler is ``handler(ctx, cfg) -> (model, record)``: ``ctx`` is the recipe's stage context (the model
being compressed, the teacher, tokenizer, texts, task, seed and ``ctx.batches(n)`` for calibration), ``cfg``
an instance of ``config_cls``, ``record`` a small JSON-able dict kept in ``compression_config.json``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import HfCompressError

__all__ = ["MethodSpec", "register", "unregister", "get_method", "method_names", "methods"]

_BUILTIN_PACKAGES = ("hf_compress.methods", "hf_compress.distillation")


@dataclass(frozen=True)
class MethodSpec:
    """What the recipe, card and planner need to know of one method (one recipe stage)."""

    name: str  # the recipe stage name, e.g. "prune_heads"
    config_cls: type  # dataclass of the stage's YAML fields; validates itself in __post_init__
    handler: Callable[[Any, Any], tuple[Any, dict]]  # (ctx, cfg) -> (model, record)
    needs_data: bool | Callable[[Any], bool] = False  # needs calibration / training texts (per config)
    shrinks: bool = True  # makes the model smaller (so a distillation may follow to heal it)
    terminal: bool = False  # nothing may follow (the result is saved as is, e.g. int8)
    first_only: bool = False  # must be the first stage (builds a new model from the loaded one)
    needs_shrunk: bool = False  # needs an earlier stage that shrank the model (distillation)
    card_tag: str | None = None  # tag on the model card
    base_model_relation: str | None = None  # card relation it implies ("quantized"); default "finetune"
    recipe_check: Callable[[Any, str], str | None] | None = None  # (cfg, task) -> error or None
    # (model, cfg) -> (params, bytes_low, bytes_high): how the stage would change the model's parameter count and
    # bytes (a range where calibration decides), counted without running it (the planner sizes candidates
    # with it); None: the planner runs the stage on a copy of the candidate's shape and counts
    predict_size: Callable[[Any, Any], tuple[int, int, int]] | None = None
    summary: str = ""

    def __post_init__(self):
        if not self.name.isidentifier():
            raise HfCompressError(f"`name` must be an identifier like prune_heads, got {self.name!r}")
        if not callable(self.handler):
            raise HfCompressError(f"`handler` of method {self.name!r} must be callable, got {self.handler!r}")

    def wants_data(self, cfg) -> bool:
        return bool(self.needs_data(cfg) if callable(self.needs_data) else self.needs_data)


_METHODS: dict[str, MethodSpec] = {}
_discovered = False


def register(spec: MethodSpec, *, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the table; a second method of the same name is an error unless ``replace``."""
    if not isinstance(spec, MethodSpec):
        raise HfCompressError(f"register() takes a MethodSpec, got {type(spec).__name__}")
    old = _METHODS.get(spec.name)
    if old is not None and old != spec and not replace:
        raise HfCompressError(
            f"a method named {spec.name!r} is already registered (by {old.handler.__module__}); "
            f"pick another name or pass replace=True"
        )
    _METHODS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    _METHODS.pop(name, None)


def _discover() -> None:
    """Import every built-in method folder once, so that each registers itself."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    for package_name in _BUILTIN_PACKAGES:
        package = importlib.import_module(package_name)
        if package_name.endswith(".methods"):
            for info in pkgutil.iter_modules(package.__path__):
                if info.ispkg:
                    importlib.import_module(f"{package_name}.{info.name}")


def methods() -> dict[str, MethodSpec]:
    """Every registered method by stage name (built-ins first, in folder order)."""
    _discover()
    return dict(_METHODS)


def method_names() -> list[str]:
    return list(methods())


def get_method(name: str) -> MethodSpec:
    table = methods()
    if name not in table:
        raise HfCompressError(f"unknown method {name!r}; registered: {', '.join(table)}")
    return table[name]
