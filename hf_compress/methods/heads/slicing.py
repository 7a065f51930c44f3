"""Head geometry behind :func:`hf_compress.prune_heads`: which rows and columns a head owns, GQA shapes.

A head ``h`` of size ``d`` owns output rows ``h*d:(h+1)*d`` of q/k/v and input columns ``h*d:(h+1)*d`` of the
output projection (in the ``[out, in]`` view); the rows and columns are kept or zeroed by
:mod:`hf_compress.core.slicing`.

Grouped-query attention (llama family): query head ``h`` reads key/value head ``h // r`` with
``r = num_heads // num_kv_heads``, and the stock attention code needs the same ``r`` in every group of every
layer (``repeat_kv``). :func:`gqa_structure` therefore turns a plan into one uniform shape: a KV group is
removed only when every query head of it is pruned (in every layer where it is removed), each layer keeps
the largest count any layer needs, and the heads kept only to fill that shape are zeroed (their output
columns are zero, so the model computes exactly what the plan asked for).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import torch

from ...errors import SurgeryError

logger = logging.getLogger(__name__)

__all__ = ["head_rows", "LayerShape", "gqa_structure", "check_plan"]


def head_rows(heads, head_dim: int, offset: int = 0) -> torch.Tensor:
    """Row indices ``offset + h*head_dim + j`` for every head ``h`` in ``heads`` (in that order)."""
    heads = torch.as_tensor(list(heads), dtype=torch.long)
    return (offset + heads[:, None] * head_dim + torch.arange(head_dim)[None, :]).reshape(-1)  # (n*d,)


@dataclass
class LayerShape:
    """What one layer keeps after GQA-consistent pruning (indices in the layer's current numbering)."""

    heads: list[int]  # query heads kept, ascending; group of kept head i is i // heads_per_group
    groups: list[int]  # key/value heads kept, ascending
    zero_heads: list[int]  # kept query heads that the plan pruned: zeroed
    zero_groups: list[int]  # kept KV heads whose query heads were all pruned: zeroed


def _fill(live: list[int], pool: list[int], size: int) -> list[int]:
    """``live`` topped up to ``size`` with the first members of ``pool`` not already in it, ascending."""
    extra = [x for x in pool if x not in live][: size - len(live)]
    return sorted(live + extra)


def gqa_structure(
    plan: dict[int, list[int]],
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    valid: Callable[[int, int], bool] = lambda heads, kv_heads: True,
) -> tuple[int, int, dict[int, LayerShape]]:
    """One uniform ``(heads, kv_heads)`` shape for every layer that keeps every head the plan keeps.

    Returns ``(new_num_heads, new_num_kv_heads, {layer: LayerShape})`` for all layers. ``valid(h, kv)`` says
    whether a config with those counts is accepted (e.g. Llama's ``hidden_size % num_heads == 0``); when the
    smallest shape is not, the next larger valid shape is used and a warning says so.
    """
    per_group = num_heads // num_kv_heads
    live_groups, widths = {}, {}
    for layer in range(num_layers):
        pruned = set(plan.get(layer, ()))
        live = {g: [h for h in range(g * per_group, (g + 1) * per_group) if h not in pruned]
                for g in range(num_kv_heads)}
        live_groups[layer] = {g: hs for g, hs in live.items() if hs}
        widths[layer] = max(len(hs) for hs in live_groups[layer].values())
    need_kv = max(len(groups) for groups in live_groups.values())
    need_r = max(widths.values())
    shapes = sorted(((k, r) for k in range(need_kv, num_kv_heads + 1) for r in range(need_r, per_group + 1)),
                    key=lambda kr: (kr[0] * kr[1], kr[0]))
    kv, r = next(kr for kr in shapes if valid(kr[0] * kr[1], kr[0]))  # the unpruned shape is always valid
    if (kv, r) != (need_kv, need_r):
        logger.warning("the plan needs %d heads / %d KV heads per layer, which the config does not accept; "
                       "keeping %d heads / %d KV heads (the extra heads are zeroed)",
                       need_kv * need_r, need_kv, kv * r, kv)
    out = {}
    for layer in range(num_layers):
        groups = _fill(list(live_groups[layer]), list(range(num_kv_heads)), kv)
        heads, zero_heads = [], []
        for g in groups:
            members = list(range(g * per_group, (g + 1) * per_group))
            live = live_groups[layer].get(g, [])
            kept = _fill(live, members, r)
            heads += kept
            zero_heads += [h for h in kept if h not in live]
        zero_groups = [g for g in groups if g not in live_groups[layer]]
        out[layer] = LayerShape(heads, groups, zero_heads, zero_groups)
    return kv * r, kv, out


def check_plan(plan, head_counts: list[int]) -> dict[int, list[int]]:
    """Validate ``{layer: [heads]}`` against the current head count of each layer; normalised copy."""
    if not isinstance(plan, dict):
        raise SurgeryError(f"plan must be a dict {{layer: [head indices]}}, got {type(plan).__name__}")
    clean = {}
    for layer, heads in plan.items():
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(head_counts):
            raise SurgeryError(f"plan layer {layer!r} must be an int in [0, {len(head_counts)}); "
                               f"fix the plan keys")
        if not isinstance(heads, (list, tuple)):
            raise SurgeryError(f"plan[{layer}] must be a list of head indices, got {heads!r}")
        odd = [h for h in heads if isinstance(h, bool) or not isinstance(h, int)]
        if odd:
            raise SurgeryError(f"plan[{layer}] must hold ints, got {odd[0]!r} in {list(heads)!r}")
        if len(set(heads)) != len(heads):
            raise SurgeryError(f"plan[{layer}] repeats head(s) in {list(heads)!r}; list each head once")
        heads = sorted(heads)
        bad = [h for h in heads if not 0 <= h < head_counts[layer]]
        if bad:
            raise SurgeryError(f"plan heads {bad} of layer {layer} must be in [0, {head_counts[layer]})")
        if len(heads) == head_counts[layer]:
            raise SurgeryError(f"plan prunes all {len(heads)} heads of layer {layer}; keep at least one "
                               f"(drop the whole layer with hf_compress.drop_layers instead)")
        if heads:
            clean[layer] = heads
    return clean
