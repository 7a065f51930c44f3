"""Recipe stages of the layers method: ``student_from_teacher`` and ``drop_layers``."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.checks import check_choice, check_positive
from ...errors import RecipeError

__all__ = ["StudentFromTeacherConfig", "DropLayersConfig", "student_from_teacher_stage", "drop_layers_stage"]


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
        check_choice("method", self.method, ("block_influence", "angular"), RecipeError)


def student_from_teacher_stage(ctx, cfg: StudentFromTeacherConfig):
    from ...arch import num_layers
    from .drop import student_from_teacher

    before = num_layers(ctx.model)
    student = student_from_teacher(ctx.model, keep=cfg.keep, num_layers=cfg.num_layers)
    return student, {"layers_before": before, "layers_after": num_layers(student)}


def drop_layers_stage(ctx, cfg: DropLayersConfig):
    from .drop import drop_layers
    from .importance import layer_importance, select_layers

    record: dict = {}
    indices = cfg.layers
    if indices is None:
        block = cfg.num_layers if cfg.contiguous else 1  # contiguous: score whole blocks of n layers
        scores = layer_importance(ctx.model, ctx.batches(cfg.num_batches), method=cfg.method, n=block)
        indices = select_layers(scores, cfg.num_layers, contiguous=cfg.contiguous, block=block)
        record["scores"] = [round(float(s), 6) for s in scores]
    record["dropped"] = [int(i) for i in indices]
    return drop_layers(ctx.model, indices), record
