"""Int8 quantization that stays int8 in memory: W8A16 (weight-only) and W8A8 (dynamic per-token activations).

    >>> quantize_int8(model, mode="w8a8", ignore=["lm_head"])   # nn.Linear and GPT-2 Conv1D -> Int8Linear
    >>> model.save_pretrained(out)                                # compressed-tensors format

Weights are symmetric per-output-channel int8 ``[out, in]`` with a ``[out, 1]`` scale (row absmax / 127.5,
compressed-tensors' rule). ``w8a8`` quantizes each token's activations to int8 at run time and multiplies
with ``torch._int_mm`` (int32 accumulation); ``w8a16`` multiplies 16-bit activations with the int8 weight
(``aten._weight_int8pack_mm`` for a few rows on CPU, else a bf16/fp16 product). ``method="gptq"`` and
``smoothquant=alpha`` (or ``"auto"``) change how the int8 values are chosen, never the format.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ...arch import is_supported
from ...core.modules import eval_mode, is_projection, set_module
from ...core.targets import find_projections, matches_ignore
from ...errors import QuantizationError
from .config import Int8Config
from .format import build_quantization_config
from .layer import Int8Linear

__all__ = ["Int8Config", "Int8Linear", "quantize_int8", "matches_ignore", "find_targets", "fuse_if_known"]

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("Linear", "Conv1D")


def find_targets(model: nn.Module, ignore, quantize_lm_head: bool = False) -> dict[str, nn.Module]:
    """name -> every nn.Linear / Conv1D that quantization would replace (tied and ignored ones left out)."""
    return find_projections(model, ignore, output_head=quantize_lm_head)


def fuse_if_known(model: nn.Module) -> dict[str, int]:
    """Run-time fusions of :mod:`.fusion` where the architecture table knows the model, else none. A table
    entry that does not fit the model is a bug: it is logged as a warning and nothing is fused."""
    from .fusion import fuse_int8

    if not is_supported(model):
        return {}
    try:
        return fuse_int8(model)
    except Exception as exc:  # noqa: BLE001 - the fusions are optional; the model stays correct unfused
        logger.warning("int8 fusion skipped for %s: %s: %s (the architecture table of hf_compress.arch does "
                       "not fit this model; please report it)", type(model).__name__, type(exc).__name__, exc)
        return {}


def _quantized_layers(model, targets, config) -> dict[str, Int8Linear]:
    """name -> its Int8Linear, computed (smoothing folded in place, GPTQ) without replacing anything yet."""
    if config.smoothquant is not None:
        from .smoothquant import smooth_model

        smooth_model(model, targets, config.calibration, alpha=config.smoothquant)
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if config.method == "gptq":
        from .gptq import gptq_quantize_model

        quantized = gptq_quantize_model(model, targets, config.calibration, config.gptq_damp, config.gptq_block)
    per_kernel = config.compile and not is_supported(model)  # unknown layout: compile each kernel
    layers = {}
    for name, module in targets.items():
        qweight, scale = quantized.get(name, (None, None))
        layers[name] = Int8Linear.from_float(module, config.mode, qweight, scale)
        layers[name].use_compile = per_kernel
    return layers


def _snapshot(model: nn.Module, targets, config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(tensor, copy on the CPU) of everything the quantization changes in place before it replaces layers
    (the tensors smoothing folds into), so that an error can put them back."""
    if config.smoothquant is None:
        return []
    from .smoothquant import smoothed_tensors

    return [(t, t.detach().to("cpu", copy=True)) for t in smoothed_tensors(model, targets)]


@torch.no_grad()
def quantize_int8(model: nn.Module, config: Int8Config | None = None, **kwargs) -> nn.Module:
    """Replace the model's nn.Linear / Conv1D layers by :class:`Int8Linear` in place; returns the model.

    Takes an :class:`Int8Config` or its fields as keywords (``mode="w8a16"``, ``ignore=[...]``, ...). Sets
    ``model.config.quantization_config`` so that ``save_pretrained`` writes a compressed-tensors checkpoint.
    On an error (bad calibration, a GPTQ Hessian that is not positive definite, ...) the model is left as
    it was: weights, layers and train/eval mode.
    """
    if config is not None and kwargs:
        raise QuantizationError(
            f"pass either `config` or keyword fields, got both (keywords {sorted(kwargs)})"
        )
    config = config or Int8Config(**kwargs)
    targets = find_targets(model, config.ignore, config.quantize_lm_head)
    if not targets:
        raise QuantizationError(f"no nn.Linear / Conv1D layer left to quantize (ignore={config.ignore!r})")
    if config.float_fallback:
        from .sensitivity import int8_sensitivity, pick_fallback

        scores = int8_sensitivity(model, targets, config.calibration, config.mode)
        kept = pick_fallback(scores, config.float_fallback)
        logger.info("left in float (largest int8 error): %s", ", ".join(f"{n} {scores[n]:.2e}" for n in kept))
        targets = {n: m for n, m in targets.items() if n not in kept}
    with eval_mode(model):
        backup = _snapshot(model, targets, config)
        replaced = []
        try:
            layers = _quantized_layers(model, targets, config)
            for name, layer in layers.items():
                set_module(model, name, layer)
                replaced.append(name)
            _finish(model, config)
        except BaseException:
            for name in replaced:
                set_module(model, name, targets[name])
            for tensor, saved in backup:
                tensor.copy_(saved)
            raise
    skipped = sorted(n for n, m in model.named_modules() if is_projection(m))
    present = {type(m).__name__ for m in targets.values()}
    qc = build_quantization_config(config.mode, skipped, [t for t in DEFAULT_TARGETS if t in present])
    if getattr(model, "config", None) is not None:
        model.config.quantization_config = qc
    logger.info("quantized %d layers to int8 (%s), kept %d in float", len(targets), config.mode, len(skipped))
    return model


def _finish(model: nn.Module, config) -> None:
    if config.compile and is_supported(model):  # inductor fuses whole blocks: eager-only fusions would
        from .compile import compile_int8  # only get in the way

        compile_int8(model)
    elif config.fuse:
        fuse_if_known(model)
