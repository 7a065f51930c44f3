"""Recipe stage of the int8 method: ``quantize_int8``."""

from __future__ import annotations

from .config import QuantizeInt8Config

__all__ = ["quantize_int8_stage"]


def quantize_int8_stage(ctx, cfg: QuantizeInt8Config):
    from .quantize import quantize_int8

    calibration = ctx.batches(cfg.num_batches) if cfg.needs_calibration else None
    model = quantize_int8(ctx.model, cfg.part_config(calibration=calibration))
    n = sum(1 for m in model.modules() if type(m).__name__ == "Int8Linear")
    record = {"int8_modules": n, "mode": cfg.mode}
    if cfg.float_fallback:
        record["float_fallback"] = cfg.float_fallback
    return model, record
