"""Settings of the int8 method: :class:`Int8Config` (what :func:`~.quantize.quantize_int8` takes) and
:class:`QuantizeInt8Config` (the ``quantize_int8`` recipe stage). Light: no torch, so validating a recipe
imports no quantization code."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...core.checks import check_ignore, check_part_config, check_positive, part_config
from ...errors import QuantizationError, RecipeError

__all__ = ["MODES", "Int8Config", "QuantizeInt8Config"]

MODES = ("w8a16", "w8a8")


@dataclass
class Int8Config:
    """How :func:`quantize_int8` quantizes.

    Attributes:
        mode: ``"w8a8"`` (int8 weights and dynamic per-token int8 activations) or ``"w8a16"`` (weight-only).
        ignore: module names / ``re:`` regexes / class names left in float. ``lm_head`` (and any layer whose
            weight is tied to another module, e.g. an embedding) stays float unless ``quantize_lm_head``.
        method: ``"rtn"`` (round to nearest) or ``"gptq"`` (needs ``calibration``).
        calibration: model-input batches (dicts) for GPTQ / SmoothQuant.
        smoothquant: SmoothQuant migration strength alpha in (0, 1); ``"auto"`` to pick each smoothing
            group's alpha (or none) by the W8A8 output error on the calibration inputs; or None (off).
            ``w8a8`` only (:mod:`hf_compress.methods.int8.smoothquant`).
        gptq_damp: GPTQ damping as a fraction of the mean Hessian diagonal; gptq_block: columns per block.
        compile: ``torch.compile`` the model's transformer blocks (:mod:`.int8_compile`) so inductor fuses
            the int8 quantize / rescale passes with bias, residual, norm and activation; for an architecture
            the table does not know, each int8 kernel is compiled instead. The state dict is unchanged.
        fuse: (eager, ``compile=False``) multiply layers that read the same input (q/k/v, gate/up) as one,
            and apply an MLP's GELU in the int8 rescale pass (:mod:`.int8_fusion`; state dict unchanged).
        quantize_lm_head: also quantize the output projection (untied only).
        float_fallback: leave this many layers in float: those with the largest int8 output error on the
            calibration inputs (:mod:`hf_compress.methods.int8.sensitivity`; needs ``calibration``).
    """

    mode: str = "w8a8"
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    method: str = "rtn"
    calibration: list | None = None
    smoothquant: float | str | None = None
    gptq_damp: float = 0.01
    gptq_block: int = 128
    compile: bool = False
    fuse: bool = True
    quantize_lm_head: bool = False
    float_fallback: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise QuantizationError(f"`mode` must be one of {MODES}, got {self.mode!r}")
        if self.method not in ("rtn", "gptq"):
            raise QuantizationError(f"`method` must be 'rtn' or 'gptq', got {self.method!r}")
        self.ignore = check_ignore(self.ignore, QuantizationError)
        if self.smoothquant is not None:
            if self.mode != "w8a8":
                raise QuantizationError(f"`smoothquant` only applies to mode='w8a8', got mode={self.mode!r}")
            sq = self.smoothquant
            is_alpha = isinstance(sq, (int, float)) and not isinstance(sq, bool) and 0.0 < sq < 1.0
            if not (is_alpha or sq == "auto"):
                raise QuantizationError(
                    f"`smoothquant` must be an alpha in (0, 1), 'auto' or None, got {sq!r}"
                )
        fallback = self.float_fallback
        if isinstance(fallback, bool) or not isinstance(fallback, int) or fallback < 0:
            raise QuantizationError(f"`float_fallback` must be an int >= 0 (layers left in float), got {fallback!r}")
        if (self.method == "gptq" or self.smoothquant is not None or fallback) and not self.calibration:
            raise QuantizationError(
                "`calibration` must be a non-empty list of input batches for method='gptq', "
                f"smoothquant or float_fallback > 0, got {self.calibration!r}"
            )
        if not 0.0 <= self.gptq_damp < 1.0:
            raise QuantizationError(f"`gptq_damp` must be in [0, 1), got {self.gptq_damp!r}")
        if self.gptq_block < 1:
            raise QuantizationError(f"`gptq_block` must be >= 1, got {self.gptq_block!r}")


@dataclass
class QuantizeInt8Config:
    """int8 weights (W8A16) or int8 weights and dynamic per-token activations (W8A8): the fields of
    :class:`Int8Config`; GPTQ / SmoothQuant calibrate on ``num_batches``
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
    float_fallback: int = 0  # the most int8-sensitive layers left in float (calibrated)
    num_batches: int = 8

    def __post_init__(self):
        check_positive("num_batches", self.num_batches, RecipeError)
        check_part_config(self, Int8Config, RecipeError, calibration=[{}])  # data comes at run time

    @property
    def needs_calibration(self) -> bool:
        return self.method == "gptq" or self.smoothquant is not None or bool(self.float_fallback)

    def part_config(self, calibration=None):
        return part_config(self, Int8Config, calibration=calibration)
