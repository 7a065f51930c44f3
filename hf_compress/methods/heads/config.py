"""Settings of the heads method: :class:`HeadPruningConfig` (what :func:`prune_heads_by_importance` takes) and
:class:`PruneHeadsConfig` (the ``prune_heads`` recipe stage). Light: no torch, so validating a recipe imports
no pruning code."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.checks import check_choice, check_part_config, check_positive, part_config
from ...errors import RecipeError, SurgeryError

__all__ = ["EXPORTS", "HeadPruningConfig", "PruneHeadsConfig"]

EXPORTS = ("physical", "masked")


@dataclass
class HeadPruningConfig:
    """Settings of :func:`prune_heads_by_importance` (and of the recipe stage that calls it)."""

    fraction: float = 0.25  # share of heads (or KV groups with whole_groups) to remove
    uniform: bool = True  # the same count in every layer (and every KV group)
    whole_groups: bool = False  # GQA models: remove whole key/value groups instead of query heads
    export: str = "physical"
    normalize: bool = True  # per-layer L2 normalisation of the importance (bertology's exponent 2)

    def __post_init__(self):
        if not isinstance(self.fraction, (int, float)) or not 0 <= self.fraction < 1:
            raise SurgeryError(f"`fraction` must be a number in [0, 1), got {self.fraction!r}")
        if self.export not in EXPORTS:
            raise SurgeryError(f"`export` must be one of {EXPORTS}, got {self.export!r}")


@dataclass
class PruneHeadsConfig:
    """Prune a fraction of attention heads ranked by gradient importance (or at random); the fields of
    :class:`HeadPruningConfig` plus how to rank."""

    fraction: float = 0.25
    uniform: bool = True
    whole_groups: bool = False
    export: str = "physical"
    normalize: bool = True
    method: str = "importance"
    num_batches: int = 8

    def __post_init__(self):
        check_choice("method", self.method, ("importance", "random"), RecipeError)
        check_positive("num_batches", self.num_batches, RecipeError)
        check_part_config(self, HeadPruningConfig, RecipeError)

    def part_config(self):
        return part_config(self, HeadPruningConfig)
