"""Which modules a method acts on: the one walk over a model's projections, and the ignore rules every
method shares (exact names, class names, ``re:`` regexes matched with ``re.match`` against the full dotted
name, as compressed-tensors does). Patterns are checked once, with a one-line error for a bad regex."""

from __future__ import annotations

import functools
import re

from torch import nn

from ..arch import get_arch, get_layers
from ..errors import HfCompressError
from .checks import check_ignore
from .modules import is_projection

__all__ = ["block_projections", "check_ignore", "find_projections", "matches_ignore"]


@functools.lru_cache(maxsize=512)
def _compiled(regex: str) -> re.Pattern:
    return re.compile(regex)


def matches_ignore(name: str, patterns, module: nn.Module | None = None) -> bool:
    """True when module ``name`` is named in ``patterns``: an exact name, ``re:<regex>`` (``re.match``
    against the full dotted name), or the module's class name."""
    for pattern in patterns or ():
        if pattern.startswith("re:"):
            try:
                if _compiled(pattern[3:]).match(name):
                    return True
            except re.error as exc:
                raise HfCompressError(f"`ignore` pattern {pattern!r} is not a valid regex ({exc}); fix or "
                                      f"remove it") from None
        elif pattern == name or (module is not None and pattern == type(module).__name__):
            return True
    return False


def block_projections(model: nn.Module) -> list[dict[str, nn.Module]]:
    """Per transformer block, ``{qualified name: module}`` of every projection of ``spec.linear_paths``."""
    spec = get_arch(model)
    names = {id(m): n for n, m in model.named_modules()}
    return [{names[id(m)]: m for m in (layer.get_submodule(p) for p in spec.linear_paths)}
            for layer in get_layers(model)]


def _shared_weights(model: nn.Module) -> set[int]:
    """ids of parameters owned by more than one module (tied, e.g. an embedding and the output head)."""
    seen, shared = set(), set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            (shared if id(p) in seen else seen).add(id(p))
    return shared


def find_projections(model: nn.Module, ignore=(), *, blocks_only: bool = False,
                     output_head: bool = False) -> dict[str, nn.Module]:
    """name -> every ``nn.Linear`` / ``Conv1D`` a method acts on, in model order.

    ``blocks_only``: only the block projections of the architecture table (:func:`block_projections`);
    otherwise every projection of the model (families outside the table included). Left out: modules
    ``ignore`` names, modules whose weight is tied to another module, and the output head
    (``get_output_embeddings``) unless ``output_head`` (then it is kept even when ``ignore`` names it).
    """
    ignore = check_ignore(ignore)
    if blocks_only:
        candidates = {n: m for block in block_projections(model) for n, m in block.items()}
    else:
        candidates = {n: m for n, m in model.named_modules() if is_projection(m)}
    get_out = getattr(model, "get_output_embeddings", None)
    head = get_out() if callable(get_out) else None
    shared = _shared_weights(model)
    targets = {}
    for name, module in candidates.items():
        if id(module.weight) in shared or (module is head and not output_head):
            continue
        if matches_ignore(name, ignore, module) and not (output_head and module is head):
            continue
        targets[name] = module
    return targets
