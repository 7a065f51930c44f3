"""Recipe stage of the sparsity method: ``sparsify``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.checks import check_positive, part_config
from ...errors import HfCompressError, RecipeError

__all__ = ["SparsifyConfig", "sparsify_stage"]


@dataclass
class SparsifyConfig:
    """Weight sparsity, made permanent before saving: the fields of
    :class:`hf_compress.methods.sparsity.sparsify.SparsityConfig`; Wanda calibrates on ``num_batches``
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
        try:
            self.part_config()
        except HfCompressError as exc:
            raise RecipeError(str(exc)) from None

    def part_config(self):
        from .sparsify import SparsityConfig

        return part_config(self, SparsityConfig)


def sparsify_stage(ctx, cfg: SparsifyConfig):
    from .sparsify import sparsify, sparsity_report

    calibration = ctx.batches(cfg.num_batches) if cfg.method == "wanda" else None
    model = sparsify(ctx.model, calibration=calibration, config=cfg.part_config())
    report = sparsity_report(model)
    return model, {"target_sparsity": float(report.sparsity), "model_sparsity": float(report.model_sparsity)}
