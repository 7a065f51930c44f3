"""Settings of the sparsity method: :class:`SparsityConfig` (what :func:`~.sparsify.sparsify` takes) and
:class:`SparsifyConfig` (the ``sparsify`` recipe stage). Light: no torch, so validating a recipe imports no
pruning code."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ...core.checks import check_ignore, check_part_config, check_positive, part_config
from ...errors import RecipeError, SurgeryError

__all__ = ["METHODS", "SCOPES", "SparsityConfig", "SparsifyConfig"]

METHODS = ("magnitude", "wanda")
SCOPES = ("per_row", "per_layer", "global")
_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass
class SparsityConfig:
    """What to prune. ``sparsity=None`` means 0.5 for unstructured, ``1 - N/M`` for an N:M pattern.

    ``sequential`` (Wanda only): collect norms block by block from already-pruned blocks (the paper's way);
    ``None`` means yes, except with ``scope="global"``, which needs one pass over the dense model.
    """

    sparsity: float | None = None
    method: str = "magnitude"
    pattern: str = "unstructured"
    scope: str = "per_row"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    sequential: bool | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise SurgeryError(f"`method` must be one of {METHODS}, got {self.method!r}")
        if self.scope not in SCOPES:
            raise SurgeryError(f"`scope` must be one of {SCOPES}, got {self.scope!r}")
        if self.pattern != "unstructured":
            match = _NM.match(str(self.pattern))
            if not match or not 0 < int(match[1]) < int(match[2]):
                raise SurgeryError(f"`pattern` must be 'unstructured' or 'N:M' with 0 < N < M (N kept of "
                                   f"every M along the input dimension, e.g. '2:4'), got {self.pattern!r}")
            implied = 1 - int(match[1]) / int(match[2])
            if self.sparsity is not None and abs(float(self.sparsity) - implied) > 1e-9:
                raise SurgeryError(f"`sparsity` must be {implied} for pattern {self.pattern!r} (or None), "
                                   f"got {self.sparsity!r}")
            if self.scope != "per_row":
                raise SurgeryError(f"`scope` must be 'per_row' for pattern {self.pattern!r} (N:M groups are "
                                   f"always inside one output row), got {self.scope!r}")
            self.sparsity = implied
        elif self.sparsity is None:
            self.sparsity = 0.5
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, (int, float)) \
                or not 0 <= self.sparsity < 1:
            raise SurgeryError(f"`sparsity` must be a number in [0, 1) (fraction of weights set to zero), "
                               f"got {self.sparsity!r}")
        self.sparsity = float(self.sparsity)
        self.ignore = check_ignore([self.ignore] if isinstance(self.ignore, str) else self.ignore, SurgeryError)
        if self.sequential and self.scope == "global":
            raise SurgeryError("`sequential` must be False or None with scope='global' (global scoring needs "
                               "every layer's norms before any is pruned), got True")
        if self.sequential is None:
            self.sequential = self.scope != "global"

    @property
    def n_m(self) -> tuple[int, int] | None:
        match = _NM.match(self.pattern)
        return (int(match[1]), int(match[2])) if match else None


@dataclass
class SparsifyConfig:
    """Weight sparsity, made permanent before saving: the fields of
    :class:`SparsityConfig`; Wanda calibrates on ``num_batches``
    batches."""

    sparsity: float | None = None
    method: str = "magnitude"
    pattern: str = "unstructured"
    scope: str = "per_row"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    sequential: bool | None = None
    num_batches: int = 8

    def __post_init__(self):
        check_positive("num_batches", self.num_batches, RecipeError)
        check_part_config(self, SparsityConfig, RecipeError)

    def part_config(self):
        return part_config(self, SparsityConfig)
