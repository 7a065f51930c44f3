"""Recipe stage of the int8 method: ``quantize_int8``, and the size of its result counted without running it."""

from __future__ import annotations

from .config import QuantizeInt8Config

__all__ = ["quantize_int8_stage", "quantize_int8_size"]


def quantize_int8_stage(ctx, cfg: QuantizeInt8Config):
    from .quantize import quantize_int8

    calibration = ctx.batches(cfg.num_batches) if cfg.needs_calibration else None
    model = quantize_int8(ctx.model, cfg.part_config(calibration=calibration))
    n = sum(1 for m in model.modules() if type(m).__name__ == "Int8Linear")
    record = {"int8_modules": n, "mode": cfg.mode}
    if cfg.float_fallback:
        record["float_fallback"] = cfg.float_fallback
    return model, record


def quantize_int8_size(model, cfg: QuantizeInt8Config) -> tuple[int, int, int]:
    """``(params, bytes_low, bytes_high)``: how this stage changes ``model``'s parameter count (not at all) and
    its bytes, counted on the float model (nothing quantized, no calibration). Every replaced projection trades
    its float weight for int8 values plus a ``[out, 1]`` scale of the weight's dtype; bias and everything else
    stay. The ``float_fallback`` layers stay float: which ones is decided on calibration data, so the bytes are
    the range over every choice of that many layers (low == high without a fallback)."""
    from ...core.modules import weight_out_in
    from ...core.targets import find_projections
    from ...errors import QuantizationError

    targets = find_projections(model, cfg.ignore, output_head=cfg.quantize_lm_head)
    n = cfg.float_fallback
    if not targets:
        raise QuantizationError(f"no nn.Linear / Conv1D layer left to quantize (ignore={cfg.ignore!r})")
    if n >= len(targets):
        raise QuantizationError(f"`float_fallback` must be less than the {len(targets)} layers to quantize, got "
                                f"{n}; leave fewer layers in float or quantize nothing")
    if cfg.smoothquant is not None:  # refuses, as quantizing would, a model type it cannot smooth
        from .smoothquant import smoothing_groups

        smoothing_groups(model, targets)
    saved = []  # bytes each projection saves in int8: its weight at 1 byte a value, plus its scale
    for module in targets.values():
        size, out = module.weight.element_size(), weight_out_in(module).shape[0]
        saved.append(module.weight.numel() * (size - 1) - out * size)
    saved.sort()
    total = sum(saved)  # every target int8; the fallback layers give theirs back
    return 0, -total + sum(saved[:n]), -total + sum(saved[len(saved) - n:])
