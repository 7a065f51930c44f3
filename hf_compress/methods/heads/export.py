"""Applying a head-pruning plan to a model so that the result saves as a loadable checkpoint.

Three ways, chosen by :func:`hf_compress.prune_heads`:

* :func:`prune_uniform` (llama, mistral, qwen2/3, gemma family, phi, phi3): physical slicing to one shape for
  every layer (see :func:`~hf_compress.methods.heads.slicing.gqa_structure`); the config gets the new
  ``num_attention_heads`` / ``num_key_value_heads`` and an explicit ``head_dim``: stock ``from_pretrained``
  loads it.
* :func:`prune_per_layer` (bert, roberta, gpt2): physical slicing with a different head count per layer;
  the model becomes the matching class of ``remote_code/modeling_pruned_heads.py``, so ``save_pretrained``
  writes that file and ``auto_map`` (load with ``trust_remote_code=True``). ``config.pruned_heads`` records
  the original indices removed.
* :func:`mask_heads` (every family): shapes unchanged, pruned heads zeroed: stock-loadable, not smaller.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ... import arch
from ...core.modules import in_features
from ...core.slicing import keep_in_cols, keep_out_rows, zero_in_cols, zero_out_rows
from ...errors import SurgeryError
from .slicing import gqa_structure, head_rows
from .remote_code import modeling_pruned_heads as remote

logger = logging.getLogger(__name__)

__all__ = ["PER_LAYER_FAMILIES", "layer_head_counts", "prune_uniform", "prune_per_layer", "mask_heads"]

#: families whose head size is derived from hidden_size: pruned per layer, saved with remote code
PER_LAYER_FAMILIES = ("bert", "gpt2")


def _projections(model: nn.Module, layer: nn.Module) -> tuple[list[nn.Module], nn.Module | None, nn.Module]:
    """``([q, k, v] or [], fused qkv or None, o)`` modules of one layer."""
    spec = arch.get_arch(model)
    o = arch.get_submodule(layer, spec.o)
    if spec.qkv:
        return [], arch.get_submodule(layer, spec.qkv), o
    return [arch.get_submodule(layer, p) for p in (spec.q, spec.k, spec.v)], None, o


def layer_head_counts(model: nn.Module) -> list[int]:
    """Current number of query heads of every layer (read from the output projection's width)."""
    d = arch.head_dim(model)
    return [in_features(_projections(model, layer)[2]) // d for layer in arch.get_layers(model)]


def _qkv_sections(model: nn.Module, heads: int) -> tuple[int, int]:
    """(query heads, kv heads) laid out in a fused qkv projection of a layer with ``heads`` query heads."""
    if arch.get_arch(model).num_kv_heads_key is None:  # no GQA: each query head has its own key/value head
        return heads, heads
    return heads, arch.num_kv_heads(model)


def _qkv_rows(heads: list[int], groups: list[int], d: int, n_heads: int, n_kv: int) -> torch.Tensor:
    """Rows of a fused [q | k | v] projection that belong to query ``heads`` and key/value ``groups``."""
    q_end, k_end = n_heads * d, (n_heads + n_kv) * d
    return torch.cat([head_rows(heads, d), head_rows(groups, d, q_end), head_rows(groups, d, k_end)])


def _edit_layer(model, layer, heads, groups, n_heads, n_kv, on_rows, on_cols) -> None:
    """Apply ``on_rows`` to the q rows of query ``heads`` and the k/v rows of key/value ``groups``, and
    ``on_cols`` to the matching columns of the output projection, of one layer (current numbering)."""
    d = arch.head_dim(model)
    qkv_list, fused, o = _projections(model, layer)
    if fused is not None:
        on_rows(fused, _qkv_rows(heads, groups, d, n_heads, n_kv))
    else:
        q, k, v = qkv_list
        on_rows(q, head_rows(heads, d))
        on_rows(k, head_rows(groups, d))
        on_rows(v, head_rows(groups, d))
    on_cols(o, head_rows(heads, d))


def _slice_layer(model, layer, heads: list[int], groups: list[int], n_heads: int, n_kv: int) -> None:
    """Keep query ``heads`` and key/value ``groups`` of one layer, physically."""
    _edit_layer(model, layer, heads, groups, n_heads, n_kv, keep_out_rows, keep_in_cols)


def _zero_layer(model, layer, heads: list[int], groups: list[int], n_heads: int, n_kv: int) -> None:
    """Zero query ``heads`` (q rows, o columns) and key/value ``groups`` (k/v rows) of one layer."""
    _edit_layer(model, layer, heads, groups, n_heads, n_kv, zero_out_rows, zero_in_cols)


def _set_attention_attrs(model, layer, **values) -> None:
    """Update cached head counts on the attention module(s) of a layer (only attributes that exist)."""
    spec = arch.get_arch(model)
    paths = {spec.o.rpartition(".")[0], (spec.q or spec.qkv).rpartition(".")[0]}
    for path in paths:
        module = arch.get_submodule(layer, path)
        for name, value in values.items():
            if hasattr(module, name):
                setattr(module, name, value)


def mask_heads(model: nn.Module, plan: dict[int, list[int]]) -> nn.Module:
    """Zero the planned heads (q/k/v rows, o columns; a KV head only when its whole group goes)."""
    counts = layer_head_counts(model)
    layers = arch.get_layers(model)
    for index, heads in plan.items():
        n_heads = counts[index]
        n_kv = _qkv_sections(model, n_heads)[1]
        per_group = n_heads // n_kv
        gone = set(heads)
        groups = [g for g in range(n_kv) if all(h in gone for h in range(g * per_group, (g + 1) * per_group))]
        _zero_layer(model, layers[index], heads, groups, n_heads, n_kv)
    return model


def _config_accepts(config, **counts) -> bool:
    try:
        type(config).from_dict({**config.to_dict(), **counts})
    except Exception:  # noqa: BLE001 - strict config validators raise assorted error types
        return False
    return True


def prune_uniform(model: nn.Module, plan: dict[int, list[int]]) -> nn.Module:
    """Physically prune a llama-family model to one (heads, kv heads) shape in every layer."""
    spec, config = arch.get_arch(model), model.config
    n_heads, n_kv, d = arch.num_heads(model), arch.num_kv_heads(model), arch.head_dim(model)

    def valid(h: int, kv: int) -> bool:
        counts = {spec.num_heads_key: h, spec.num_kv_heads_key: kv, spec.head_dim_key: d}
        return _config_accepts(config, **counts)

    new_heads, new_kv, shapes = gqa_structure(plan, arch.num_layers(model), n_heads, n_kv, valid)
    for index, layer in enumerate(arch.get_layers(model)):
        shape = shapes[index]
        _zero_layer(model, layer, shape.zero_heads, shape.zero_groups, n_heads, n_kv)
        _slice_layer(model, layer, shape.heads, shape.groups, n_heads, n_kv)
        _set_attention_attrs(model, layer, num_key_value_groups=new_heads // new_kv,
                             num_key_value_heads=new_kv, num_heads=new_heads, num_attention_heads=new_heads)
    setattr(config, spec.num_heads_key, new_heads)
    setattr(config, spec.num_kv_heads_key, new_kv)
    setattr(config, spec.head_dim_key, d)  # explicit: hidden_size // heads no longer gives the head size
    logger.info("pruned to %d heads / %d KV heads per layer (was %d / %d)", new_heads, new_kv, n_heads, n_kv)
    return model


def _original_indices(config, layer: int, total: int) -> list[int]:
    """Original head index of each current head of ``layer``, from ``config.pruned_heads``."""
    pruned = getattr(config, "pruned_heads", None) or {}
    gone = set(pruned.get(layer, pruned.get(str(layer), ())))
    return [h for h in range(total) if h not in gone]


def prune_per_layer(model: nn.Module, plan: dict[int, list[int]]) -> nn.Module:
    """Physically prune bert/roberta/gpt2 heads per layer and make ``save_pretrained`` write remote code."""
    name = type(model).__name__.removeprefix("PrunedHeads")
    if name not in remote.PRUNED_CLASSES:
        raise SurgeryError(f"physical head pruning of {type(model).__name__} cannot be saved as a loadable "
                           f"checkpoint; supported classes are {', '.join(sorted(remote.PRUNED_CLASSES))}. "
                           f"Use prune_heads(model, plan, export='masked') instead")
    config = model.config
    total = arch.num_heads(model)  # the unpruned count: config.num_attention_heads is never changed here
    counts = layer_head_counts(model)
    pruned = {int(k): sorted(v) for k, v in (getattr(config, "pruned_heads", None) or {}).items()}
    layers = arch.get_layers(model)
    for index, heads in plan.items():
        original = _original_indices(config, index, total)
        keep = [h for h in range(counts[index]) if h not in set(heads)]
        _slice_layer(model, layers[index], keep, keep, counts[index], counts[index])
        width = len(keep) * arch.head_dim(model)
        _set_attention_attrs(model, layers[index], num_attention_heads=len(keep), num_heads=len(keep),
                             all_head_size=width, split_size=width)
        pruned[index] = sorted(set(pruned.get(index, [])) | {original[h] for h in heads})
    config.pruned_heads = {str(k): v for k, v in sorted(pruned.items())}
    _make_remote_code(model, name)
    return model


def _make_remote_code(model: nn.Module, stock_name: str) -> None:
    """Swap in the remote-code subclass and register ``auto_map`` so save_pretrained copies its file."""
    cls = remote.PRUNED_CLASSES[stock_name]
    family = model.config.model_type
    auto = remote.AUTO_CLASSES[family]
    module = remote.__name__.rpartition(".")[2]
    auto_map = dict(getattr(model.config, "auto_map", None) or {})
    auto_map.update({a: f"{module}.{remote.PRUNED_CLASSES[n].__name__}" for a, n in auto.items()})
    model.config.auto_map = auto_map
    own_auto = next(a for a, n in auto.items() if n == stock_name)
    cls.register_for_auto_class(own_auto)
    model.__class__ = cls
    _register_output_capture(model)


def _register_output_capture(model: nn.Module) -> None:
    """transformers 5 records ``output_hidden_states`` / ``output_attentions`` by hooks it looks up under the
    model's class name, registered when a model is built; a class swapped in afterwards must be registered
    too, or the model silently returns ``hidden_states=None``."""
    try:
        from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY
    except ImportError:  # older transformers: outputs were not recorded by class
        return
    _CAN_RECORD_REGISTRY[model] = model._can_record_outputs
