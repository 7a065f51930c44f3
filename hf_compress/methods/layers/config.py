"""Settings of the layers method's recipe stages, ``student_from_teacher`` and ``drop_layers``. Light: no
torch, so validating a recipe imports no layer code."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.checks import check_choice, check_positive
from ...errors import RecipeError

__all__ = ["METHODS", "StudentFromTeacherConfig", "DropLayersConfig"]

METHODS = ("block_influence", "angular")  # layer-importance scores (:mod:`.importance`)


@dataclass
class StudentFromTeacherConfig:
    """A new, shallower model from the loaded one (the loaded model becomes the distillation teacher)."""

    num_layers: int | None = None
    keep: list[int] | None = None

    def __post_init__(self):
        if (self.num_layers is None) == (self.keep is None):
            raise RecipeError(
                f"give exactly one of `num_layers` or `keep`, got num_layers={self.num_layers!r}, "
                f"keep={self.keep!r}"
            )
        check_positive("num_layers", self.num_layers, RecipeError)


@dataclass
class DropLayersConfig:
    """Drop ``num_layers`` layers chosen by importance on the recipe data, or the explicit ``layers``."""

    num_layers: int | None = None
    layers: list[int] | None = None
    method: str = "block_influence"
    contiguous: bool = False
    num_batches: int = 8

    def __post_init__(self):
        if (self.num_layers is None) == (self.layers is None):
            raise RecipeError(
                f"give exactly one of `num_layers` (to drop) or `layers`, got "
                f"num_layers={self.num_layers!r}, layers={self.layers!r}"
            )
        check_positive("num_layers", self.num_layers, RecipeError)
        check_positive("num_batches", self.num_batches, RecipeError)
        check_choice("method", self.method, METHODS, RecipeError)
