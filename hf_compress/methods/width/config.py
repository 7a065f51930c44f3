"""Settings of width pruning and the one rule that turns them into sizes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import SurgeryError

__all__ = ["WidthPruningConfig", "target_size"]


def _check_amount(name: str, value) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SurgeryError(f"`{name}` must be a fraction in [0, 1) or a size (int >= 1), got {value!r}")
    if isinstance(value, float) and not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise SurgeryError(f"`{name}` as a fraction to remove must be in [0, 1), got {value!r}; pass an int for "
                           f"an absolute size")
    if isinstance(value, int) and value < 1:
        raise SurgeryError(f"`{name}` as a size must be an int >= 1, got {value!r}")


@dataclass
class WidthPruningConfig:
    """How much width to remove.

    ``ffn``: MLP neurons (the same count in every layer, so ``intermediate_size`` stays one number);
    ``hidden``: residual channels (embeddings, every projection, norms, LM head). Each is ``None`` (keep),
    a float in ``[0, 1)`` (the fraction to remove, rounded to a multiple of ``round_to``) or an int (the new
    size, which must be a multiple of ``round_to`` and at most the current size).
    """

    ffn: float | int | None = None
    hidden: float | int | None = None
    round_to: int = 8  # sizes are multiples of this (tensor-core / vector friendly); never rounded to 0

    def __post_init__(self):
        _check_amount("ffn", self.ffn)
        _check_amount("hidden", self.hidden)
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise SurgeryError(f"`round_to` must be an int >= 1 (e.g. 8 or 16), got {self.round_to!r}")


def target_size(name: str, amount, current: int, round_to: int) -> int:
    """The new size for ``amount`` (see :class:`WidthPruningConfig`) of a dimension now ``current`` wide."""
    if amount is None:
        return current
    if isinstance(amount, float):
        if amount == 0.0:
            return current
        size = round(current * (1.0 - amount) / round_to) * round_to
        return min(max(size, round_to), current)  # never 0; never wider than now
    if amount > current:
        raise SurgeryError(f"`{name}` must be at most the current size {current}, got {amount}")
    if amount % round_to and amount != current:
        raise SurgeryError(f"`{name}` must be a multiple of round_to={round_to}, got {amount}; pick "
                           f"{max(round_to, amount // round_to * round_to)} or set round_to=1")
    return amount
