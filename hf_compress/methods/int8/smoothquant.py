"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before W8A8 quantization.

A smoothing group is a producer whose output channels feed nothing but some linears' input columns. Per
input channel j of those readers:
    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)
the producer's output channel j is divided by s_j and every reader's column j multiplied by s_j, which
leaves the float model's function unchanged while flattening the per-token activation ranges. The scaled
weights are then quantized as usual, so the checkpoint format is unchanged. Groups (as AWQ's mappings):

* attention-input norm -> q/k/v and MLP-input norm -> MLP input projections (gate/up, fc): the norm's
  weight (and bias) is divided by s. Only pre-norm families qualify (the norm's output feeds nothing else);
  post-norm encoders (BERT) also send it into the residual, so folding would change the model.
* gated MLP up projection -> down projection (Llama-like ``down(act(gate(x)) * up(x))``): up's output rows
  (and bias) are divided by s. Per-output-channel weight quantization is indifferent to scaling whole rows,
  so up's own rounding is unchanged. GPT-2's ``c_fc -> GELU -> c_proj`` cannot fold through the GELU.

``alpha="auto"`` picks each group's alpha on a grid (plus no smoothing) by the W8A8 output error it leaves
on the calibration inputs (:mod:`hf_compress.methods.int8.smoothquant_search`).
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ...arch import ARCHITECTURES, ArchSpec, get_arch, get_layers, get_submodule
from ...core.calibration import run_with_input_hooks
from ...core.modules import out_features, weight_out_in
from ...errors import QuantizationError
from .smoothquant_search import TokenSampler, search_alpha

__all__ = ["smoothing_factors", "smooth_model", "smoothing_groups", "SmoothGroup", "SMOOTHABLE", "is_smoothable",
           "smoothed_tensors"]

logger = logging.getLogger(__name__)


def is_smoothable(spec: ArchSpec) -> bool:
    """Pre-norm families with a separate attention and MLP norm scaling by ``w`` (not Gemma's ``1 + w``,
    not Phi's one norm shared by the parallel attention and MLP, not post-norm encoders)."""
    return bool(spec.attn_norm and spec.mlp_norm and spec.attn_norm != spec.mlp_norm and not spec.norm_offset)


#: model types smoothquant can smooth (from the architecture table)
SMOOTHABLE = tuple(sorted(t for t, spec in ARCHITECTURES.items() if is_smoothable(spec)))


@dataclass
class SmoothGroup:
    """``producer``'s output channels (``rows`` of a linear's output, all of a norm's) feed ``readers``."""

    producer: nn.Module
    readers: list[str]  # target names
    rows: slice = field(default_factory=lambda: slice(None))


def smoothing_factors(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """act_absmax (in,), weights [(out_i, in)] -> s (in,) = act^alpha / w^(1-alpha), clamped away from 0."""
    w_absmax = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).float()  # (in,)
    a = act_absmax.float().clamp_min(1e-5)
    s = a.pow(alpha) / w_absmax.clamp_min(1e-5).pow(1.0 - alpha)
    return s.clamp_min(1e-5)


def smoothing_groups(model: nn.Module, targets: dict[str, nn.Module]) -> list[SmoothGroup]:
    """Every group of the model whose readers are all quantization targets (an ignored reader would see
    unscaled inputs), in layer order: attention norm, MLP norm, then up -> down."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = get_arch(model)
    if not is_smoothable(spec):
        raise QuantizationError(
            f"smoothquant supports the pre-norm model types {', '.join(SMOOTHABLE)}, got model_type "
            f"{model_type!r}; use smoothquant=None for this model"
        )
    names = {id(m): n for n, m in targets.items()}
    qkv = [spec.qkv] if spec.qkv else [spec.q, spec.k, spec.v]
    groups = []
    for layer in get_layers(model):
        candidates = [
            (get_submodule(layer, spec.attn_norm), qkv, slice(None)),
            (get_submodule(layer, spec.mlp_norm), list(spec.mlp_in), slice(None)),
        ]
        if spec.gated_mlp:
            up = get_submodule(layer, spec.mlp_in[-1])
            half = out_features(up) // 2
            rows = slice(half, None) if spec.gated_mlp == "fused" else slice(None)
            candidates.append((up, [spec.mlp_out], rows))
        for producer, paths, rows in candidates:
            readers = [get_submodule(layer, p) for p in paths]
            if all(id(m) in names for m in readers):
                groups.append(SmoothGroup(producer, [names[id(m)] for m in readers], rows))
    return groups


def smoothed_tensors(model: nn.Module, targets: dict[str, nn.Module]) -> list[torch.Tensor]:
    """Every tensor :func:`smooth_model` changes in place (producers' weight and bias, readers' weights)."""
    found: dict[int, torch.Tensor] = {}
    for g in smoothing_groups(model, targets):
        for t in (g.producer.weight, getattr(g.producer, "bias", None), *(targets[n].weight for n in g.readers)):
            if t is not None:
                found.setdefault(id(t), t)
    return list(found.values())


def _fold(group: SmoothGroup, targets: dict[str, nn.Module], s: torch.Tensor) -> None:
    """Divide the producer's output channels by s (in,), multiply the readers' input columns by s."""
    p = group.producer
    if isinstance(p, nn.Linear):  # up_proj: its output rows
        p.weight[group.rows].div_(s.to(p.weight.dtype)[:, None])
    else:  # a norm: elementwise weight
        p.weight.div_(s.to(p.weight.dtype))
    if getattr(p, "bias", None) is not None:
        p.bias[group.rows].div_(s.to(p.bias.dtype))
    for n in group.readers:
        weight = weight_out_in(targets[n])  # (out, in), a view: scaled in place
        weight.mul_(s.to(weight.dtype)[None, :])


@torch.no_grad()
def smooth_model(
    model: nn.Module, targets: dict[str, nn.Module], batches, alpha: float | str = 0.5, max_tokens: int = 4096
) -> int:
    """Fold SmoothQuant factors into every group in place; returns the number of groups smoothed.

    ``alpha``: a migration strength in (0, 1) for all groups, or ``"auto"``: per group, the grid alpha (or
    none) with the least W8A8 output error on at most ``max_tokens`` calibration tokens of its input.
    Smoothing leaves the float model unchanged, so one float pass captures every group's input; all
    factors are computed from the unsmoothed weights before any is folded (up_proj's column scale from
    its norm group and its row scale from the down group commute).
    """
    from .layer import float_weight

    groups = smoothing_groups(model, targets)
    batches = list(batches)
    per_batch = math.ceil(max_tokens / max(len(batches), 1)) if alpha == "auto" else None
    samplers = {g.readers[0]: TokenSampler(per_batch, seed=i) for i, g in enumerate(groups)}
    run_with_input_hooks(model, {n: targets[n] for n in samplers}, batches,
                         lambda name, x, _src: samplers[name].add(x.float()), QuantizationError)
    factors, chosen = [], Counter()
    for g in groups:
        smp = samplers[g.readers[0]]
        weights = [float_weight(targets[n]) for n in g.readers]
        if alpha == "auto":
            best, s, _ = search_alpha(smp.tokens(), smp.absmax, weights, smoothing_factors)  # s = 1: None
            chosen[best] += 1
        else:
            s = smoothing_factors(smp.absmax, weights, float(alpha))
        factors.append(s)
    for g, s in zip(groups, factors):
        _fold(g, targets, s)
    if alpha == "auto":
        logger.info("smoothquant auto: alpha chosen per group %s", dict(sorted(chosen.items(), key=str)))
    return len(groups)
