"""Attention-head importance (Michel et al., 2019) and head pruning that gives loadable checkpoints.

transformers 5.x removed ``head_mask`` and ``prune_heads``. Here a gate vector of ones is multiplied on the
input of every attention output projection (a forward pre-hook, so it works with SDPA, eager or any other
attention kernel), one gate entry per head; the importance of a head is the accumulated ``|dL/dgate|``.

    >>> scores = head_importance(model, batches)                 # [num_layers, num_heads], higher = keep
    >>> plan = select_heads(scores, fraction=0.3)                # {layer: [heads to prune]}
    >>> prune_heads(model, plan)                                 # in place; then model.save_pretrained(...)

How each family is saved is described in :mod:`hf_compress.methods.heads.export`.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ... import arch
from ...core.calibration import to_device
from ...core.modules import eval_mode, model_device
from ...errors import SurgeryError
from .config import EXPORTS, HeadPruningConfig
from .export import PER_LAYER_FAMILIES, layer_head_counts, mask_heads, prune_per_layer, prune_uniform
from .slicing import check_plan

logger = logging.getLogger(__name__)

__all__ = ["HeadPruningConfig", "head_importance", "select_heads", "prune_heads", "prune_heads_by_importance"]

def _lm_labels(model: nn.Module, batch: dict) -> torch.Tensor:
    if model.get_output_embeddings() is None:
        raise SurgeryError(f"{type(model).__name__} has no language-model head, so its own loss cannot be "
                           f"used: put `labels` in the batches or pass "
                           f"loss_fn=lambda model, batch: <scalar loss>")
    labels = batch["input_ids"].clone()
    if "attention_mask" in batch:
        labels[batch["attention_mask"] == 0] = -100  # (B, T)
    return labels


def _loss(model: nn.Module, batch: dict, loss_fn: Callable | None) -> torch.Tensor:
    if loss_fn is not None:
        return loss_fn(model, batch)
    if "labels" not in batch:
        batch = {**batch, "labels": _lm_labels(model, batch)}
    loss = model(**batch).loss
    if loss is None:
        raise SurgeryError(f"{type(model).__name__} returned no loss for these batches; pass loss_fn")
    return loss


class _Gates:
    """Forward pre-hooks on every output projection that multiply each head of each example by a fresh
    gate of ones: ``(B, ..., H*d) -> (B, ..., H, d) * gate (B, 1.., H, 1)``. Gates made in one pass are kept
    (a loss may call the model several times) with the index of their layer."""

    def __init__(self, model: nn.Module, head_dim: int):
        spec = arch.get_arch(model)
        self.head_dim, self.made = head_dim, []
        self.handles = [arch.get_submodule(layer, spec.o).register_forward_pre_hook(self._hook(i))
                        for i, layer in enumerate(arch.get_layers(model))]

    def _hook(self, index: int):
        def hook(module, args):
            x = args[0].unflatten(-1, (-1, self.head_dim))  # (B, ..., H, d)
            gate = torch.ones(x.shape[0], x.shape[-2], device=x.device, requires_grad=True)  # (B, H) float32
            self.made.append((index, gate))
            shape = (x.shape[0],) + (1,) * (x.dim() - 3) + (x.shape[-2], 1)
            return ((x * gate.view(shape).to(x.dtype)).flatten(-2),) + tuple(args[1:])

        return hook

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def head_importance(
    model: nn.Module,
    batches: Iterable[dict],
    loss_fn: Callable[[nn.Module, dict], torch.Tensor] | None = None,
    normalize: bool = True,
    progress: bool = True,
) -> torch.Tensor:
    """Importance of every attention head, shape ``[layers, heads]``, higher = keep.

    Michel et al.'s ``E_x |dL(x)/dgate|``: every example (row of a batch) gets its own gate, so the absolute
    value is taken per example, then summed over the examples of a batch and averaged over batches.

    Args:
        batches: dicts of model inputs (``input_ids``, ``attention_mask``, optional ``labels``).
        loss_fn: ``loss_fn(model, batch) -> scalar``; by default the model's own loss: ``labels`` from the
            batch, else the LM loss with ``labels = input_ids`` (padding ignored) for causal/masked LMs.
        normalize: divide each layer's scores by their L2 norm (the bertology script's default).

    The model runs in eval mode; its parameters, their ``.grad`` and its train/eval mode are left as they
    were (the gradient is taken with ``torch.autograd.grad`` with respect to the gates only).
    """
    counts = layer_head_counts(model)
    if len(set(counts)) != 1:
        raise SurgeryError(f"head_importance needs the same head count in every layer, got {counts}; "
                           f"compute importance before pruning")
    device = model_device(model)
    gates = _Gates(model, arch.head_dim(model))
    total, n_batches = torch.zeros(len(counts), counts[0]), 0
    try:
        with eval_mode(model, no_grad=False):  # gradients with respect to the gates
            for batch in tqdm(batches, desc="head importance", disable=not progress, leave=False):
                batch = to_device(batch, device)
                gates.made.clear()
                loss = _loss(model, batch, loss_fn)
                grads = torch.autograd.grad(loss, [g for _, g in gates.made])  # leaves every .grad untouched
                for (layer, _), grad in zip(gates.made, grads):
                    total[layer] += grad.abs().sum(0).cpu()  # (B, H) -> (H,)
                n_batches += 1
    finally:
        gates.remove()
        gates.made.clear()
    if n_batches == 0:
        raise SurgeryError("head_importance got no batches; pass at least one batch of inputs")
    scores = total / n_batches
    if normalize:
        scores = scores / (scores.pow(2).sum(-1, keepdim=True).sqrt() + 1e-20)
    return scores


def _round(x: float) -> int:
    return int(math.floor(x + 0.5))


def select_heads(
    scores: torch.Tensor,
    fraction: float,
    uniform: bool = True,
    group_size: int = 1,
    whole_groups: bool = False,
) -> dict[int, list[int]]:
    """The lowest-scoring heads to prune: ``{layer: [head indices]}`` (layers with nothing to prune omitted).

    Args:
        scores: ``[layers, heads]``, higher = keep (e.g. from :func:`head_importance`; random for a baseline).
        fraction: share of units to prune, rounded half up to a whole number per block (``uniform``) or
            overall.
        uniform: the same count in every layer; with ``group_size > 1`` also the same count in every KV group,
            which is what lets GQA models shrink physically (see :mod:`hf_compress.methods.heads.slicing`).
        group_size: query heads per key/value head (``num_heads // num_kv_heads``); 1 without GQA.
        whole_groups: prune whole KV groups (scored by the sum of their heads) instead of single heads.

    Never prunes every head of a layer.
    """
    if not torch.is_tensor(scores) or scores.dim() != 2 or not torch.isfinite(scores).all():
        got = getattr(scores, "shape", scores)
        raise SurgeryError(f"scores must be a finite 2-D tensor [layers, heads], got {got}")
    if not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise SurgeryError(f"fraction must be a number in [0, 1), got {fraction!r}")
    n_layers, n_heads = scores.shape
    if group_size < 1 or n_heads % group_size:
        raise SurgeryError(f"group_size must divide the head count {n_heads}, got {group_size}")
    unit = group_size if whole_groups else 1
    units = scores.float().view(n_layers, n_heads // unit, unit).sum(-1)  # (L, U)
    per_layer = units.shape[1]
    chosen: dict[int, list[int]] = {}
    if uniform:
        # each layer is one block, or with GQA head selection each KV group is one block
        width = group_size if group_size > 1 and not whole_groups else per_layer
        n = _round(fraction * width)
        if n >= width:
            raise SurgeryError(f"fraction {fraction} prunes all {width} heads of a group/layer; lower it"
                               + (" or use whole_groups=True" if width < per_layer else ""))
        blocked = units.view(n_layers, per_layer // width, width)  # (L, blocks, width)
        order = blocked.argsort(dim=-1, stable=True)[..., :n]
        offsets = torch.arange(per_layer // width)[None, :, None] * width
        for layer, idx in enumerate((order + offsets).reshape(n_layers, -1).tolist()):
            chosen[layer] = sorted(idx)
    else:
        n = _round(fraction * units.numel())
        keep_best = units.argmax(dim=1)  # one unit per layer always stays
        masked = units.clone()
        masked[torch.arange(n_layers), keep_best] = float("inf")
        flat = masked.view(-1).argsort(stable=True)[:n].tolist()
        for i in flat:
            chosen.setdefault(i // per_layer, []).append(i % per_layer)
    plan = {}
    for layer, idx in sorted(chosen.items()):
        heads = sorted(h for u in idx for h in range(u * unit, (u + 1) * unit))
        if heads:
            plan[layer] = heads
    return plan


def _check_float_projections(model: nn.Module) -> None:
    """Head surgery slices float ``nn.Linear`` / ``Conv1D`` weights; refuse anything else (int8 modules)."""
    spec = arch.get_arch(model)
    for i, layer in enumerate(arch.get_layers(model)):
        for path in spec.attention_paths:
            module = arch.get_submodule(layer, path)
            weight = getattr(module, "weight", None)
            kind = type(module).__name__
            if kind not in ("Linear", "Conv1D") or not torch.is_tensor(weight) or not weight.is_floating_point():
                raise SurgeryError(f"prune_heads needs float attention projections, got layer {i}'s {path} as "
                                   f"{kind} (an int8-quantized model?); prune heads before quantize_int8")


def prune_heads(model: nn.Module, plan: dict[int, list[int]], export: str = "physical") -> nn.Module:
    """Remove the planned heads in place and return the model.

    Args:
        plan: ``{layer: [head indices]}`` in the layer's current numbering (see :func:`select_heads`).
        export: ``"physical"``: slice the weights (a smaller model; llama-family configs stay stock,
            bert/roberta/gpt2 save with a modeling file for ``trust_remote_code=True``).
            ``"masked"``: zero the heads and keep every shape (a stock checkpoint of the original size, for
            any family).
    """
    if export not in EXPORTS:
        raise SurgeryError(f"export must be one of {EXPORTS}, got {export!r}")
    spec = arch.get_arch(model)
    _check_float_projections(model)  # before anything changes
    plan = check_plan(plan, layer_head_counts(model))
    if not plan:
        return model
    if export == "masked":
        return mask_heads(model, plan)
    if spec.family in PER_LAYER_FAMILIES:
        return prune_per_layer(model, plan)
    if spec.head_dim_key is None:
        model_type = model.config.model_type
        raise SurgeryError(f"physical head pruning is not supported for model_type {model_type!r} "
                           f"(no per-layer head count in its config); use export='masked'")
    return prune_uniform(model, plan)


def prune_heads_by_importance(model: nn.Module, batches: Iterable[dict], config: HeadPruningConfig,
                              loss_fn: Callable | None = None) -> tuple[nn.Module, dict[int, list[int]]]:
    """Importance -> selection -> pruning in one call; returns ``(model, plan)``."""
    scores = head_importance(model, batches, loss_fn=loss_fn, normalize=config.normalize)
    group_size = arch.num_heads(model) // arch.num_kv_heads(model)
    plan = select_heads(scores, config.fraction, config.uniform, group_size, config.whole_groups)
    return prune_heads(model, plan, export=config.export), plan
