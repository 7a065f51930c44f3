"""Which layers int8 hurts most: the per-layer float fallback.

For every layer quantization would replace, the int8 layer (the very :class:`Int8Linear` the model would run:
same rounding, same kernel) is run on that layer's own calibration inputs next to the float layer, and scored by
the relative output error

    err = ||int8(x) - float(x)||^2 / ||float(x)||^2     over the calibration tokens (padding dropped).

The ``float_fallback`` highest are left in float (``Int8Config.float_fallback``): a layer-local criterion, so one
calibration pass scores every layer, the way accuracy-driven tuners rank fallback candidates before trying them.
"""

from __future__ import annotations

import torch
from torch import nn

from ...core.calibration import run_with_input_hooks, sample_rows
from ...errors import QuantizationError
from .layer import Int8Linear

__all__ = ["int8_sensitivity", "pick_fallback"]

TOKENS_PER_BATCH = 256  # a seeded random subset per batch keeps memory bounded on long calibration sets


@torch.no_grad()
def int8_sensitivity(model: nn.Module, targets: dict[str, nn.Module], calibration, mode: str,
                     seed: int = 0) -> dict[str, float]:
    """name -> relative output error of the layer in ``mode`` int8 on its calibration inputs (see the module
    docstring). The model is not changed."""
    generator = torch.Generator().manual_seed(seed)
    error = {name: 0.0 for name in targets}
    energy = {name: 0.0 for name in targets}
    quantized = {name: Int8Linear.from_float(module, mode) for name, module in targets.items()}

    def on_input(name: str, x: torch.Tensor, _source) -> None:  # x (tokens, in)
        x = sample_rows(x, TOKENS_PER_BATCH, generator)
        ref = targets[name].forward(x).float()  # (tokens, out); .forward: not through this very hook
        error[name] += float((quantized[name](x).float() - ref).pow(2).sum())
        energy[name] += float(ref.pow(2).sum())

    run_with_input_hooks(model, targets, calibration, on_input, QuantizationError, desc="int8 sensitivity")
    scores = {name: error[name] / max(energy[name], 1e-30) for name in targets}
    bad = {n: s for n, s in scores.items() if s != s or s in (float("inf"), float("-inf"))}
    if bad:
        raise QuantizationError(f"int8 sensitivity is not finite for layers {sorted(bad)[:5]}: the calibration "
                                f"inputs give non-finite activations; check the model and the batches")
    return scores


def pick_fallback(scores: dict[str, float], count: int) -> list[str]:
    """The ``count`` most sensitive layer names (ties broken by name, so the choice is deterministic)."""
    if count >= len(scores):
        raise QuantizationError(f"`float_fallback` must be less than the {len(scores)} layers to quantize, got "
                                f"{count}; leave fewer layers in float or quantize nothing")
    return sorted(sorted(scores), key=lambda n: -scores[n])[:count]
