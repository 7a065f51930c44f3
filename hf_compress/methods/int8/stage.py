"""Recipe stage of the int8 method: ``quantize_int8``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.checks import check_positive, part_config
from ...errors import HfCompressError, RecipeError

__all__ = ["QuantizeInt8Config", "quantize_int8_stage"]


@dataclass
class QuantizeInt8Config:
    """int8 weights (W8A16) or int8 weights and dynamic per-token activations (W8A8): the fields of
    :class:`hf_compress.methods.int8.quantize.Int8Config`; GPTQ / SmoothQuant calibrate on ``num_batches``
    batches."""

    mode: str = "w8a8"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    method: str = "rtn"
    smoothquant: float | str | None = None  # an alpha in (0, 1), "auto" (searched per group) or null
    gptq_damp: float = 0.01
    gptq_block: int = 128
    quantize_lm_head: bool = False
    compile: bool = False
    fuse: bool = True
    num_batches: int = 8

    def __post_init__(self):
        check_positive("num_batches", self.num_batches, RecipeError)
        try:
            self.part_config(calibration=[{}])
        except HfCompressError as exc:
            raise RecipeError(str(exc)) from None

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq" or self.smoothquant is not None

    def part_config(self, calibration=None):
        from .quantize import Int8Config

        return part_config(self, Int8Config, calibration=calibration)


def quantize_int8_stage(ctx, cfg: QuantizeInt8Config):
    from .quantize import quantize_int8

    calibration = ctx.batches(cfg.num_batches) if cfg.needs_calibration else None
    model = quantize_int8(ctx.model, cfg.part_config(calibration=calibration))
    n = sum(1 for m in model.modules() if type(m).__name__ == "Int8Linear")
    return model, {"int8_modules": n, "mode": cfg.mode}
