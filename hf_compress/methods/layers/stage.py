"""Recipe stages of the layers method: ``student_from_teacher`` and ``drop_layers``."""

from __future__ import annotations

from .config import DropLayersConfig, StudentFromTeacherConfig

__all__ = ["student_from_teacher_stage", "drop_layers_stage"]


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
        scores = ctx.memoized(("layer_importance", cfg.num_batches, cfg.method, block),
                              lambda: layer_importance(ctx.model, ctx.batches(cfg.num_batches), method=cfg.method,
                                                       n=block))
        indices = select_layers(scores, cfg.num_layers, contiguous=cfg.contiguous, block=block)
        record["scores"] = [round(float(s), 6) for s in scores]
    record["dropped"] = [int(i) for i in indices]
    return drop_layers(ctx.model, indices), record
