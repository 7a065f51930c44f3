"""Width pruning in place: MLP neurons (every family) and residual channels (families with ``head_dim``).

    >>> scores = width_importance(model, batches)
    >>> prune_width(model, ffn=0.25, hidden=0.25, scores=scores)   # then model.save_pretrained(...)

FFN: every layer keeps the same number of neurons (its own best ones), so ``intermediate_size`` stays one
number and the checkpoint loads with stock transformers. Removing a neuron is exact: the model computes
what the original computes with that neuron's output zeroed.

Hidden channels: the kept channels of the embeddings, every projection's input (q/k/v, MLP in, LM and task
heads) and output (attention output, MLP out), every norm and the final norm; ``hidden_size`` and an explicit
``head_dim`` are written to the config, so attention keeps its shape. Norm statistics are then taken over the
kept channels. Gemma multiplies its embedding by ``sqrt(hidden_size)``: the embedding is rescaled so that
the residual stream keeps its scale (and, when the LM head is tied, the final norm compensates).

BERT, RoBERTa, DistilBERT and GPT-2 are refused for hidden channels: their configs derive the head size from
the hidden size, so no stock config describes a narrower residual with unchanged attention.
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from ... import arch
from ...core.modules import in_features, is_conv1d
from ...core.slicing import keep_in_cols, keep_out_rows
from ...errors import SurgeryError
from .config import WidthPruningConfig, target_size
from .importance import WidthScores, hidden_norms

logger = logging.getLogger(__name__)

__all__ = ["prune_width", "plan_width", "check_width"]


def _ffn_width(model: nn.Module) -> int:
    spec = arch.get_arch(model)
    widths = set()
    for layer in arch.get_layers(model):
        out = arch.get_submodule(layer, spec.mlp_out)
        _check_prunable(out, spec.mlp_out)
        widths.add(in_features(out))
    if len(widths) != 1:
        raise SurgeryError(f"prune_width needs one MLP width in every layer, got {sorted(widths)}")
    return widths.pop()


def _check_prunable(module: nn.Module, path: str) -> None:
    if type(module) is not nn.Linear and not is_conv1d(module):
        raise SurgeryError(f"`{path}` must be a plain nn.Linear or Conv1D for prune_width, got "
                           f"{type(module).__name__}; prune width before sparsity / int8 quantization")


def _check_scores(scores, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if scores is None:
        raise SurgeryError(f"`scores` must be given to prune {name}: compute them with "
                           f"width_importance(model, batches)")
    value = getattr(scores, name)
    if not torch.is_tensor(value) or tuple(value.shape) != shape:
        got = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
        raise SurgeryError(f"`scores.{name}` must be a tensor of shape {shape}, got {got}")
    if not torch.isfinite(value).all():
        raise SurgeryError(f"`scores.{name}` must be finite, got NaN or inf entries")
    return value


def check_width(model: nn.Module, config: WidthPruningConfig) -> tuple[int, int, int, int]:
    """``(ffn_now, ffn_new, hidden_now, hidden_new)`` after checking the family, the sizes and the module
    types; needs no scores (the recipe stage calls it before scoring)."""
    spec = arch.get_arch(model)
    ffn_now, hidden_now = _ffn_width(model), arch.hidden_size(model)
    ffn_new = target_size("ffn", config.ffn, ffn_now, config.round_to)
    hidden_new = target_size("hidden", config.hidden, hidden_now, config.round_to)
    if hidden_new < hidden_now:
        if spec.head_dim_key is None:
            raise SurgeryError(
                f"hidden-channel pruning of {spec.family} is refused: its config derives the head size from "
                f"`{spec.hidden_size_key}` // heads, so no stock config describes a narrower residual with "
                f"the same attention; prune `ffn` (stock) and attention heads (prune_heads) instead")
        for layer in arch.get_layers(model):
            for path in spec.linear_paths:
                _check_prunable(arch.get_submodule(layer, path), path)
        hidden_new = _accepted_hidden(model, config, hidden_new, hidden_now)
    return ffn_now, ffn_new, hidden_now, hidden_new


def _config_refuses(model: nn.Module, hidden: int) -> str | None:
    """Why the model's config class refuses residual width ``hidden`` (transformers validates a config on
    save: Llama needs ``hidden_size % num_attention_heads == 0``), or ``None``."""
    spec = arch.get_arch(model)
    config = copy.deepcopy(model.config)
    setattr(config, spec.head_dim_key, arch.head_dim(model))
    setattr(config, spec.hidden_size_key, hidden)
    validate = getattr(config, "validate", None)
    try:
        if validate is not None:
            validate()
    except Exception as exc:  # noqa: BLE001 - any validator error means the config cannot be saved
        line = str(exc).strip().splitlines()[-1].strip()  # "ValueError: The hidden size (..) is not ..."
        return line.split(": ", 1)[-1].rstrip(".") if line.split(":", 1)[0].endswith("Error") else line
    return None


def _accepted_hidden(model: nn.Module, config: WidthPruningConfig, size: int, current: int) -> int:
    """``size`` if the config accepts it; for a fraction the nearest multiple of ``round_to`` it accepts
    (ties: the smaller); for an explicit size an error naming that nearest accepted size."""
    reason = _config_refuses(model, size)
    if reason is None:
        return size
    step = config.round_to
    candidates = sorted(range(step, current, step), key=lambda c: (abs(c - size), c))
    nearest = next((c for c in candidates if _config_refuses(model, c) is None), None)
    if isinstance(config.hidden, float) and nearest is not None:
        logger.warning("prune_width: hidden %d is refused by %s (%s); using %d", size,
                       type(model.config).__name__, reason, nearest)
        return nearest
    fix = f"use {nearest}" if nearest is not None else "keep the hidden size"
    raise SurgeryError(f"`hidden` must be a size {type(model.config).__name__} accepts, got {size}: {reason}; "
                       f"{fix}")


def plan_width(model: nn.Module, config: WidthPruningConfig, scores: WidthScores | None):
    """``(ffn_keep [L, I'] or None, hidden_keep [H'] or None)``: sorted indices to keep; checks everything
    (family, sizes, scores, module types) before anything is changed."""
    ffn_now, ffn_new, hidden_now, hidden_new = check_width(model, config)
    ffn_keep = hidden_keep = None
    if ffn_new < ffn_now:
        ffn_scores = _check_scores(scores, "ffn", (len(arch.get_layers(model)), ffn_now))
        ffn_keep = ffn_scores.topk(ffn_new, dim=1).indices.sort(dim=1).values  # (L, I')
    if hidden_new < hidden_now:
        hidden_scores = _check_scores(scores, "hidden", (hidden_now,))
        hidden_keep = hidden_scores.topk(hidden_new).indices.sort().values  # (H',)
    return ffn_keep, hidden_keep


def prune_width(model: nn.Module, ffn=None, hidden=None, scores: WidthScores | None = None,
                round_to: int = 8, config: WidthPruningConfig | None = None) -> nn.Module:
    """Remove MLP neurons and/or residual channels in place (see the module docstring); returns ``model``.

    ``ffn`` / ``hidden``: ``None`` (keep), a fraction in ``[0, 1)`` to remove, or the new size (an int);
    or pass ``config=WidthPruningConfig(...)``. ``scores``: :func:`width_importance` output (higher = keep).
    Bad input raises before the model is touched.
    """
    if config is None:
        config = WidthPruningConfig(ffn=ffn, hidden=hidden, round_to=round_to)
    elif ffn is not None or hidden is not None:
        raise SurgeryError(f"give `config` or ffn/hidden, not both, got config={config!r}, ffn={ffn!r}, "
                           f"hidden={hidden!r}")
    ffn_keep, hidden_keep = plan_width(model, config, scores)
    _check_reloadable(model, None if ffn_keep is None else ffn_keep.shape[1],
                      None if hidden_keep is None else len(hidden_keep))
    if ffn_keep is not None:
        _prune_ffn(model, ffn_keep)
    if hidden_keep is not None:
        _prune_hidden(model, hidden_keep)
    return model


def _shapes(model: nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_reloadable(model: nn.Module, ffn: int | None, hidden: int | None) -> None:
    """Prune an empty (meta-device) copy the same way, build the model's class afresh from the resulting
    config and compare every tensor's shape: a quirk the arch table does not know (Phi's ``qk_layernorm``
    sized ``hidden_size // heads``) is refused here, before anything changes, not at reload time."""
    if ffn is None and hidden is None:
        return
    with torch.device("meta"):
        shell = type(model)._from_config(copy.deepcopy(model.config))
    if _shapes(shell) != _shapes(model):
        logger.debug("prune_width: %s does not rebuild from its config; reload check skipped", type(model))
        return
    if ffn is not None:
        _prune_ffn(shell, torch.arange(ffn).expand(arch.num_layers(model), ffn))
    if hidden is not None:
        _prune_hidden(shell, torch.arange(hidden))
    with torch.device("meta"):
        fresh = _shapes(type(model)._from_config(copy.deepcopy(shell.config)))
    bad = [(k, v, fresh.get(k)) for k, v in _shapes(shell).items() if fresh.get(k) != v]
    if bad:
        key, ours, theirs = bad[0]
        raise SurgeryError(f"prune_width to ffn={ffn}, hidden={hidden} would not reload: {type(model).__name__} "
                           f"built from the new config has {key} of shape {theirs}, the pruned weights "
                           f"{ours}; this {arch.get_arch(model).family} config cannot describe it, keep "
                           f"that dimension")


def _prune_ffn(model: nn.Module, keep: torch.Tensor) -> None:
    spec = arch.get_arch(model)
    width = _ffn_width(model)
    for layer, rows in zip(arch.get_layers(model), keep):
        chunks = 2 if spec.gated_mlp == "fused" else 1  # Phi-3's gate_up_proj: gate rows, then up rows
        chunked = torch.cat([rows + c * width for c in range(chunks)])
        for path in spec.mlp_in:
            keep_out_rows(arch.get_submodule(layer, path), chunked)
        keep_in_cols(arch.get_submodule(layer, spec.mlp_out), rows)
    setattr(model.config, spec.intermediate_size_key, int(keep.shape[1]))
    logger.info("prune_width: MLP %d -> %d neurons per layer", width, keep.shape[1])


def _keep_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            param = getattr(norm, name, None)
            if isinstance(param, nn.Parameter):
                setattr(norm, name, nn.Parameter(param[keep].clone(), requires_grad=param.requires_grad))
    if isinstance(norm, nn.LayerNorm):
        norm.normalized_shape = (len(keep),)


def _keep_embedding(embedding: nn.Embedding, keep: torch.Tensor) -> None:
    with torch.no_grad():
        weight = embedding.weight
        embedding.weight = nn.Parameter(weight[:, keep].clone(), requires_grad=weight.requires_grad)
    embedding.embedding_dim = len(keep)


def _prune_hidden(model: nn.Module, keep: torch.Tensor) -> None:
    spec, base = arch.get_arch(model), model.base_model
    old, new, head_size = arch.hidden_size(model), len(keep), arch.head_dim(model)
    word = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is word.weight
    inside = {id(m) for m in base.modules()}
    outside = [m for m in model.modules()  # LM / task heads: they read the residual stream
               if id(m) not in inside and isinstance(m, nn.Linear) and m.in_features == old
               and not (tied and m is head)]
    for embedding in [m for m in base.modules() if isinstance(m, nn.Embedding) and m.embedding_dim == old]:
        _keep_embedding(embedding, keep)
    for norm in hidden_norms(model):
        _keep_norm(norm, keep)
    for layer in arch.get_layers(model):
        for path in spec.attention_paths[:-1] + spec.mlp_in:
            keep_in_cols(arch.get_submodule(layer, path), keep)
        for path in (spec.o, spec.mlp_out):
            keep_out_rows(arch.get_submodule(layer, path), keep)
    for module in outside:
        keep_in_cols(module, keep)
    if tied:
        head.weight = word.weight
    setattr(model.config, spec.hidden_size_key, new)
    setattr(model.config, spec.head_dim_key, head_size)
    if isinstance(getattr(word, "embed_scale", None), torch.Tensor):  # Gemma's scaled word embedding
        _rescale_embedding(model, old, new, tied)
    logger.info("prune_width: hidden %d -> %d channels (head_dim %d written)", old, new, head_size)


def _rescale_embedding(model: nn.Module, old: int, new: int, tied: bool) -> None:
    """Gemma multiplies embeddings by ``sqrt(hidden_size)``: keep the product by scaling the table by
    ``s = sqrt(old / new)``; a tied LM head then sees ``s`` times its weight, which the final norm's
    ``offset + w`` divides back out."""
    spec = arch.get_arch(model)
    scale = math.sqrt(old / new)
    word = model.get_input_embeddings()
    with torch.no_grad():
        word.weight.mul_(scale)
        word.embed_scale.fill_(new**0.5)  # what a reload computes from the new hidden_size
        word.scalar_embed_scale = new**0.5
        if tied:
            norm = arch.get_submodule(model.base_model, spec.final_norm)
            norm.weight.copy_((spec.norm_offset + norm.weight) / scale - spec.norm_offset)
