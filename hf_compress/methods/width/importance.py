"""Activation importance of MLP neurons and residual channels (Minitron, Muralidharan et al. 2024).

Over the valid tokens (``attention_mask == 1``) of the calibration batches:

* FFN neuron ``j`` of layer ``l``: mean ``|h_j|`` of the MLP's intermediate activation, i.e. the input of the
  MLP's output projection (``act(gate) * up`` for gated MLPs, ``act(fc1 x)`` otherwise);
* hidden channel ``c``: the sum over every norm of hidden width (per layer, the embedding norm, the final
  norm; see ``ArchSpec.norm_paths``) of the mean ``|y_c|`` of that norm's output.

Higher means more important. Sums are kept in float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ... import arch
from ...errors import SurgeryError

__all__ = ["WidthScores", "width_importance", "hidden_norms"]


@dataclass
class WidthScores:
    """``ffn``: ``[num_layers, intermediate_size]``; ``hidden``: ``[hidden_size]`` (float64, higher = keep)."""

    ffn: torch.Tensor
    hidden: torch.Tensor


def hidden_norms(model: nn.Module) -> list[nn.Module]:
    """Every norm of hidden width: per layer (``ArchSpec.norm_paths``), then the embedding and final norms."""
    spec, base = arch.get_arch(model), getattr(model, "base_model", model)
    found = [arch.get_submodule(layer, path) for layer in arch.get_layers(model) for path in spec.norm_paths]
    found += [arch.get_submodule(base, path) for path in (spec.embedding_norm, spec.final_norm) if path]
    return found


class _Sums:
    """Per-module sums of ``|x|`` over the valid tokens of the current batch (float64, on CPU)."""

    def __init__(self):
        self.valid: torch.Tensor | None = None  # (B, T) bool, set before each forward
        self.sums: dict[int, torch.Tensor] = {}

    def add(self, key: int, x: torch.Tensor) -> None:
        valid = self.valid.to(x.device)
        if x.shape[:2] != valid.shape:
            raise SurgeryError(f"an activation of shape {tuple(x.shape)} does not match the attention_mask "
                               f"{tuple(valid.shape)}; pass batches of (B, T) input_ids/attention_mask")
        total = x[valid].abs().double().sum(0).cpu()  # (width,)
        self.sums[key] = self.sums[key] + total if key in self.sums else total


@torch.no_grad()
def width_importance(model: nn.Module, batches: Iterable[dict], progress: bool = True) -> WidthScores:
    """Scores of every FFN neuron (per layer) and every hidden channel; see the module docstring.

    ``batches``: dicts of model inputs (``input_ids``, ``attention_mask``, ...). The model runs in eval mode
    under ``no_grad`` (no cache); its parameters are untouched and its train/eval mode is restored.
    """
    spec = arch.get_arch(model)
    layers = arch.get_layers(model)
    norms = hidden_norms(model)
    acc = _Sums()
    handles = []
    for i, layer in enumerate(layers):
        mlp_out = arch.get_submodule(layer, spec.mlp_out)
        handles.append(mlp_out.register_forward_pre_hook(lambda m, args, i=i: acc.add(i, args[0])))
    for j, norm in enumerate(norms):
        handles.append(norm.register_forward_hook(lambda m, args, out, j=j: acc.add(len(layers) + j, out)))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    count = 0
    extra = {"use_cache": False} if spec.causal else {}
    try:
        for batch in tqdm(batches, desc="width importance", leave=False, disable=not progress):
            batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
            ids = batch["input_ids"]
            mask = batch.get("attention_mask")
            acc.valid = (mask if mask is not None else torch.ones_like(ids)).bool()  # (B, T)
            model(**batch, **extra)
            count += int(acc.valid.sum())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if count == 0:
        raise SurgeryError("`batches` held no valid tokens (empty, or every attention_mask entry is 0)")
    missing = [k for k in range(len(layers) + len(norms)) if k not in acc.sums]
    if missing:
        raise SurgeryError(f"width_importance: {len(missing)} hooked modules were never called; the "
                           f"architecture differs from hf_compress.arch's table for {spec.family}")
    ffn = torch.stack([acc.sums[i] for i in range(len(layers))]) / count  # (L, I)
    hidden = sum(acc.sums[len(layers) + j] for j in range(len(norms))) / count  # (H,)
    return WidthScores(ffn=ffn, hidden=hidden)
