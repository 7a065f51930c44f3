"""Shared references for the width-pruning tests: what a pruned model must compute, written without
hf_compress's slicing (zeroed neurons; kept-channel norms)."""

import copy

import torch
from tiny_models import ENCODER_TYPES

from hf_compress import arch
from hf_compress.methods.width.importance import WidthScores, hidden_norms


def logits_of(model, batch):
    kw = {} if model.config.model_type in ENCODER_TYPES else {"use_cache": False}
    with torch.no_grad():
        logits = model(**batch, **kw).logits
    return logits[batch["attention_mask"].bool()]  # (valid tokens, V)


def random_scores(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers, ffn, hidden = arch.num_layers(model), arch.intermediate_size(model), arch.hidden_size(model)
    return WidthScores(ffn=torch.rand(layers, ffn, generator=g, dtype=torch.float64),
                       hidden=torch.rand(hidden, generator=g, dtype=torch.float64))


def zero_neurons_reference(model, keep):
    """Hooks that zero every MLP neuron not in ``keep[layer]`` at the MLP output projection's input."""
    spec, handles = arch.get_arch(model), []
    for layer, rows in zip(arch.get_layers(model), keep):
        out = arch.get_submodule(layer, spec.mlp_out)
        mask = torch.zeros(arch.intermediate_size(model))
        mask[rows] = 1
        handles.append(out.register_forward_pre_hook(lambda m, args, mask=mask: (args[0] * mask,) + args[1:]))
    return handles


def kept_channel_reference(model, keep):
    """The unpruned model computing with the kept channels only: every other channel is zeroed in every
    weight that writes the residual stream (embeddings, attention/MLP outputs), and every norm takes its
    statistics over the kept channels (writing zeros elsewhere)."""
    ref = copy.deepcopy(model)
    spec, drop = arch.get_arch(ref), torch.ones(arch.hidden_size(ref), dtype=torch.bool)
    drop[keep] = False
    with torch.no_grad():
        ref.get_input_embeddings().weight[:, drop] = 0
        for layer in arch.get_layers(ref):
            for path in (spec.o, spec.mlp_out):
                module = arch.get_submodule(layer, path)
                module.weight[drop] = 0
                if module.bias is not None:
                    module.bias[drop] = 0

    def kept_norm(module, args, output):
        x = args[0].float()[..., keep]  # (B, T, H')
        w = module.weight.float()[keep] + spec.norm_offset
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if isinstance(module, torch.nn.LayerNorm):
            y = torch.nn.functional.layer_norm(x, (len(keep),), w, module.bias[keep], eps)
        else:
            y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
        full = torch.zeros_like(output)
        full[..., keep] = y.to(output.dtype)
        return full

    for norm in hidden_norms(ref):
        norm.register_forward_hook(kept_norm)
    return ref
