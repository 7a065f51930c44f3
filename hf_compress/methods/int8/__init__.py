"""int8 weights (W8A16) and weights + activations (W8A8): RTN, GPTQ, SmoothQuant, fused and compiled
kernels, the compressed-tensors file format and its ``from_pretrained`` loader."""

from ...core.registry import MethodSpec, register
from .config import QuantizeInt8Config
from .stage import quantize_int8_size, quantize_int8_stage

register(
    MethodSpec(
        name="quantize_int8",
        config_cls=QuantizeInt8Config,
        handler=quantize_int8_stage,
        predict_size=quantize_int8_size,
        needs_data=lambda cfg: cfg.needs_calibration,
        shrinks=False,
        terminal=True,
        card_tag="int8",
        base_model_relation="quantized",
        summary="int8 weights (and activations for w8a8), saved in the compressed-tensors format",
    )
)
