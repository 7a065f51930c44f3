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
from transformers.pytorch_utils import Conv1D

from ...arch import is_supported
from ...core.targets import matches_ignore
from ...errors import QuantizationError, UnsupportedArchitectureError
from .config import Int8Config
from .format import build_quantization_config
from .layer import Int8Linear

__all__ = ["Int8Config", "Int8Linear", "quantize_int8", "matches_ignore", "find_targets", "fuse_if_known"]

logger = logging.getLogger(__name__)

DEFAULT_TARGETS = ("Linear", "Conv1D")


def find_targets(model: nn.Module, ignore, quantize_lm_head: bool = False) -> dict[str, nn.Module]:
    """name -> every nn.Linear / Conv1D that quantization would replace (tied and ignored ones left out)."""
    owners: dict[int, int] = {}
    for module in model.modules():
        for p in module.parameters(recurse=False):
            owners[id(p)] = owners.get(id(p), 0) + 1
    get_out = getattr(model, "get_output_embeddings", None)
    out_emb = get_out() if callable(get_out) else None
    targets = {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, Conv1D)) or isinstance(module, Int8Linear):
            continue
        if owners.get(id(module.weight), 0) > 1 or (module is out_emb and not quantize_lm_head):
            continue  # tied to an embedding / the output head: stays float
        if matches_ignore(name, ignore, module) and not (quantize_lm_head and module is out_emb):
            continue
        targets[name] = module
    return targets


def fuse_if_known(model: nn.Module) -> dict[str, int]:
    """Run-time fusions of :mod:`.int8_fusion` where the architecture table knows the model, else none."""
    from .fusion import fuse_int8

    try:
        return fuse_int8(model)
    except UnsupportedArchitectureError:
        return {}


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


@torch.no_grad()
def quantize_int8(model: nn.Module, config: Int8Config | None = None, **kwargs) -> nn.Module:
    """Replace the model's nn.Linear / Conv1D layers by :class:`Int8Linear` in place; returns the model.

    Takes an :class:`Int8Config` or its fields as keywords (``mode="w8a16"``, ``ignore=[...]``, ...). Sets
    ``model.config.quantization_config`` so that ``save_pretrained`` writes a compressed-tensors checkpoint.
    """
    if config is not None and kwargs:
        raise QuantizationError(
            f"pass either `config` or keyword fields, got both (keywords {sorted(kwargs)})"
        )
    config = config or Int8Config(**kwargs)
    targets = find_targets(model, config.ignore, config.quantize_lm_head)
    if not targets:
        raise QuantizationError(f"no nn.Linear / Conv1D layer left to quantize (ignore={config.ignore!r})")
    was_training = model.training
    model.eval()
    if config.smoothquant is not None:
        from .smoothquant import smooth_model

        smooth_model(model, targets, config.calibration, alpha=config.smoothquant)
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if config.method == "gptq":
        from .gptq import gptq_quantize_model

        quantized = gptq_quantize_model(
            model, targets, config.calibration, config.gptq_damp, config.gptq_block
        )
    compile_blocks = config.compile and is_supported(model)
    for name, module in targets.items():
        qweight, scale = quantized.get(name, (None, None))
        layer = Int8Linear.from_float(module, config.mode, qweight, scale)
        layer.use_compile = config.compile and not compile_blocks  # unknown layout: compile each kernel
        _set_module(model, name, layer)
    if compile_blocks:  # inductor fuses across whole blocks: the eager-only fusions would only get in the way
        from .compile import compile_int8

        compile_int8(model)
    elif config.fuse:
        fuse_if_known(model)
    skipped = sorted(
        n
        for n, m in model.named_modules()
        if isinstance(m, (nn.Linear, Conv1D)) and not isinstance(m, Int8Linear)
    )
    present = {type(m).__name__ for m in targets.values()}
    qc = build_quantization_config(config.mode, skipped, [t for t in DEFAULT_TARGETS if t in present])
    if getattr(model, "config", None) is not None:
        model.config.quantization_config = qc
    model.train(was_training)
    logger.info("quantized %d layers to int8 (%s), kept %d in float", len(targets), config.mode, len(skipped))
    return model
