"""Recipe stage of the sparsity method: ``sparsify``."""

from __future__ import annotations

from .config import SparsifyConfig

__all__ = ["sparsify_stage"]


def sparsify_stage(ctx, cfg: SparsifyConfig):
    from .sparsify import sparsify, sparsity_report

    calibration = ctx.batches(cfg.num_batches) if cfg.method == "wanda" else None
    model = sparsify(ctx.model, calibration=calibration, config=cfg.part_config())
    report = sparsity_report(model)
    return model, {"target_sparsity": float(report.sparsity), "model_sparsity": float(report.model_sparsity)}
