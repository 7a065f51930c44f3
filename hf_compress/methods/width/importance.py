"""Activation importance of MLP neurons and residual channels (Minitron, Muralidharan et al. 2024).

Over the valid tokens (``attention_mask == 1``) of the calibration batches:

* FFN neuron ``j`` of layer ``l``: mean ``|h_j|`` of the MLP's intermediate activation, i.e. the input of the
  MLP's output projection (``act(gate) * up`` for gated MLPs, ``act(fc1 x)`` otherwise);
* hidden channel ``c``: the sum over layers of the mean ``|y_c|`` of the outputs of the norms feeding
  attention and the MLP, taken as the inputs of the first attention projection and of the first MLP input
  projection (for post-norm BERT: the previous layer's output norm and the attention output norm).

Padding is dropped by the shared calibration hooks; higher means more important; sums in float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ... import arch
from ...core.calibration import run_with_input_hooks
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


def width_importance(model: nn.Module, batches: Iterable[dict], progress: bool = True) -> WidthScores:
    """Scores of every FFN neuron (per layer) and every hidden channel; see the module docstring.

    ``batches``: dicts of model inputs (``input_ids``, ``attention_mask``, ...). The model runs in eval mode
    under ``no_grad`` (no cache); its parameters are untouched and its train/eval mode is restored.
    ``progress`` is kept for callers; the shared calibration pass shows its own bar.
    """
    spec = arch.get_arch(model)
    layers = arch.get_layers(model)
    first_attn = (spec.qkv or spec.q, spec.mlp_in[0])  # they read the norms feeding attention and the MLP
    modules = {f"ffn.{i}": arch.get_submodule(layer, spec.mlp_out) for i, layer in enumerate(layers)}
    modules.update({f"hidden.{i}.{j}": arch.get_submodule(layer, path)
                    for i, layer in enumerate(layers) for j, path in enumerate(first_attn)})
    sums: dict[str, torch.Tensor] = {}
    count = [0]

    def on_input(name: str, x: torch.Tensor, _source) -> None:  # x: (valid tokens, width)
        total = x.double().abs().sum(0).cpu()
        sums[name] = sums[name] + total if name in sums else total
        if name == "ffn.0":
            count[0] += x.shape[0]

    run_with_input_hooks(model, modules, batches, on_input, error=SurgeryError, desc="width importance")
    if count[0] == 0:
        raise SurgeryError("`batches` held no valid tokens (empty, or every attention_mask entry is 0)")
    ffn = torch.stack([sums[f"ffn.{i}"] for i in range(len(layers))]) / count[0]  # (L, I)
    hidden = sum(v for k, v in sums.items() if k.startswith("hidden.")) / count[0]  # (H,)
    return WidthScores(ffn=ffn, hidden=hidden)
