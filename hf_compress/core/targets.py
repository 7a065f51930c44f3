"""Which modules a method acts on: ignore rules shared by every method (names, class names, ``re:``)."""

from __future__ import annotations

import re

from torch import nn

__all__ = ["matches_ignore"]


def matches_ignore(name: str, patterns, module: nn.Module | None = None) -> bool:
    """True when module ``name`` is named in ``patterns``: an exact name, ``re:<regex>`` (``re.match``
    against the full dotted name, as compressed-tensors does), or the module's class name."""
    for pattern in patterns or ():
        if pattern.startswith("re:"):
            if re.match(pattern[3:], name):
                return True
        elif pattern == name or (module is not None and pattern == type(module).__name__):
            return True
    return False
