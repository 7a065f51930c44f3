"""SmoothQuant (Xiao et al., 2023): move activation outliers into the weights before W8A8 quantization.

For the linears that read one normalisation's output, per input channel j:
    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)
the norm's weight (and bias) is divided by s and every reading linear's column j multiplied by s_j, which
leaves the float model's function unchanged while flattening the per-token activation ranges. The scaled
weights are then quantized as usual, so the checkpoint format is unchanged.

Only pre-norm families qualify (the norm's output feeds nothing but these linears): Llama-like blocks
(``input_layernorm`` -> q/k/v, ``post_attention_layernorm`` -> gate/up) and GPT-2 (``ln_1``, ``ln_2``).
Post-norm encoders (BERT) send the norm output into the residual too, so folding would change the model.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from transformers.pytorch_utils import Conv1D

from ..arch import get_arch, get_layers, get_submodule
from ..errors import QuantizationError
from .gptq import run_with_input_hooks

__all__ = ["smoothing_factors", "smooth_model", "SMOOTHABLE"]

# family -> (attention-input norm, MLP-input norm) in one layer. Gemma's norm scales by (1 + w): left out.
SMOOTHABLE = {
    "llama": ("input_layernorm", "post_attention_layernorm"),
    "phi3": ("input_layernorm", "post_attention_layernorm"),
    "gpt2": ("ln_1", "ln_2"),
}
_GEMMA = ("gemma", "gemma2", "gemma3_text")


def smoothing_factors(act_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """act_absmax (in,), weights [(out_i, in)] -> s (in,) = act^alpha / w^(1-alpha), clamped away from 0."""
    w_absmax = torch.stack([w.abs().amax(dim=0) for w in weights]).amax(dim=0).float()  # (in,)
    a = act_absmax.float().clamp_min(1e-5)
    s = a.pow(alpha) / w_absmax.clamp_min(1e-5).pow(1.0 - alpha)
    return s.clamp_min(1e-5)


def _groups(model: nn.Module, targets: dict[str, nn.Module]) -> list[tuple[nn.Module, list[str]]]:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = get_arch(model)
    if model_type in _GEMMA or spec.family not in SMOOTHABLE:
        raise QuantizationError(
            f"smoothquant supports pre-norm families {sorted(SMOOTHABLE)} (llama, mistral, qwen2/3, phi3, "
            f"gpt2), got model_type {model_type!r}; use smoothquant=None for this model"
        )
    names = {id(m): n for n, m in targets.items()}
    attn_norm, mlp_norm = SMOOTHABLE[spec.family]
    qkv = [spec.qkv] if spec.qkv else [spec.q, spec.k, spec.v]
    groups = []
    for layer in get_layers(model):
        for norm_path, paths in ((attn_norm, qkv), (mlp_norm, list(spec.mlp_in))):
            norm = get_submodule(layer, norm_path)
            linears = [get_submodule(layer, p) for p in paths]
            if all(
                id(m) in names for m in linears
            ):  # an ignored reader would see unscaled inputs: skip group
                groups.append((norm, [names[id(m)] for m in linears]))
    return groups


@torch.no_grad()
def smooth_model(model: nn.Module, targets: dict[str, nn.Module], batches, alpha: float = 0.5) -> int:
    """Fold SmoothQuant factors into the norms and the reading linears in place; returns groups smoothed."""
    from .int8_layer import float_weight

    groups = _groups(model, targets)
    readers = {n: targets[n] for _, names in groups for n in names}
    absmax: dict[str, torch.Tensor] = {}

    def on_input(name, x, _source):  # x (n, in)
        cur = x.abs().amax(dim=0)
        absmax[name] = torch.maximum(absmax[name], cur) if name in absmax else cur

    run_with_input_hooks(model, readers, batches, on_input)
    for norm, names in groups:
        s = smoothing_factors(absmax[names[0]], [float_weight(targets[n]) for n in names], alpha)  # (in,)
        norm.weight.div_(s.to(norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.div_(s.to(norm.bias.dtype))
        for n in names:
            lin = targets[n]
            if isinstance(lin, Conv1D):  # weight stored (in, out)
                lin.weight.mul_(s.to(lin.weight.dtype)[:, None])
            else:
                lin.weight.mul_(s.to(lin.weight.dtype)[None, :])
    return len(groups)
