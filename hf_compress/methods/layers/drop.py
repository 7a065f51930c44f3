"""Layer dropping and students built from teachers, for every family in :mod:`hf_compress.arch`.

``drop_layers`` removes whole transformer blocks in place and keeps the model loadable by stock
transformers: it renumbers every ``layer_idx`` (the KV cache indexes by it), updates the layer count in the
config, slices every per-layer config list, recomputes Qwen2-style ``max_window_layers`` and, for GPT-2 with
``scale_attn_by_inverse_layer_idx``, folds the old per-layer attention scale into the query weights.
Everything is validated and planned before the first change, so bad input leaves the model untouched.

Layer scoring (``layer_importance``, ``select_layers``) lives in :mod:`.layer_importance` and is re-exported.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable

import torch
from torch import nn

from ...arch import get_arch, get_layers, get_submodule, layers_parent, set_layers
from ...arch import num_layers as config_num_layers
from ...core.modules import weight_out_in
from ...errors import SurgeryError
from .importance import layer_importance, select_layers

__all__ = ["drop_layers", "layer_importance", "select_layers", "spread_layers", "student_from_teacher"]

logger = logging.getLogger(__name__)

# Config lists that may by chance have as many entries as there are layers but are not per-layer.
_NOT_PER_LAYER = {
    "architectures",
    "bad_words_ids",
    "suppress_tokens",
    "begin_suppress_tokens",
    "forced_decoder_ids",
    "eos_token_id",
    "bos_token_id",
    "pad_token_id",
    "decoder_start_token_id",
}


def _check_indices(indices, n: int, name: str) -> list[int]:
    """Validated, sorted layer indices; raises :class:`SurgeryError` naming the bad value."""
    if isinstance(indices, (int, str, bytes)) or not isinstance(indices, Iterable):
        raise SurgeryError(f"`{name}` must be a list of layer indices, got {indices!r}; e.g. {name}=[1, 2]")
    values = list(indices)
    for i in values:
        if isinstance(i, bool) or not isinstance(i, int):
            raise SurgeryError(f"`{name}` must hold ints, got {i!r} in {values!r}")
        if not 0 <= i < n:
            raise SurgeryError(f"`{name}` holds layer {i}, but the model has {n} layers: use 0..{n - 1}")
    if len(set(values)) != len(values):
        dupes = sorted({i for i in values if values.count(i) > 1})
        raise SurgeryError(f"`{name}` repeats layer(s) {dupes} in {values!r}; list each layer once")
    return sorted(values)


def _per_layer_lists(config, spec, n: int) -> dict[str, list]:
    """Config attributes that hold one entry per layer: the keys the arch table declares, plus any other
    list/tuple of length ``n`` (a per-layer field the table does not know yet)."""
    found = {}
    for key in spec.per_layer_keys:
        value = getattr(config, key, None)
        if value is None:
            continue
        if not isinstance(value, (list, tuple)) or len(value) != n:
            raise SurgeryError(
                f"config.{key} must list one entry per layer ({n}), got {value!r}; fix the "
                f"config before dropping layers"
            )
        found[key] = value
    for key, value in vars(config).items():
        if key in found or key in _NOT_PER_LAYER or key.endswith(("_token_id", "_token_ids")):
            continue
        if isinstance(value, (list, tuple)) and len(value) == n:
            logger.warning("slicing config.%s as a per-layer list (its length equals the layer count)", key)
            found[key] = value
    return found


#: config dicts keyed by layer index (``pruned_heads``: the per-layer head counts of a head-pruned model)
_LAYER_KEYED = ("pruned_heads",)


def _renumber(by_layer: dict, keep: list[int]) -> dict:
    """``{layer: value}`` (int or str keys) for the kept layers, keys renumbered to their new positions."""
    old = {int(k): v for k, v in by_layer.items()}
    return {str(new): old[i] for new, i in enumerate(keep) if i in old}


def _new_threshold(config, key: str, old_types, new_types, keep: list[int], n: int) -> int | None:
    """A layer-count threshold for the kept layers, e.g. Qwen2/Qwen3 ``max_window_layers`` (the first ``m``
    layers use full attention, the rest sliding). ``None`` when the config has no such field. Refuses a
    kept attention pattern the threshold cannot express."""
    mwl = getattr(config, key, None)
    if mwl is None:
        return None
    # mwl >= n means no layer slides: keep the value (it still exceeds the new count)
    new = mwl if mwl >= n else sum(1 for i in keep if i < mwl)
    if new_types is not None and getattr(config, "sliding_window", None) is not None:
        full = min(new, len(keep))
        expected = ["full_attention"] * full + ["sliding_attention"] * (len(keep) - full)
        if list(new_types) != expected:
            raise SurgeryError(
                f"the kept layers' attention pattern {list(new_types)} cannot be expressed by Qwen2's "
                f"`{key}` (full attention for the first m layers, sliding after); the original "
                f"pattern was {list(old_types)} with {key}={mwl}. Keep a set of layers whose "
                f"full-attention layers come first"
            )
    return new


def _fold_layer_scale(layer: nn.Module, spec, old: int, new: int) -> None:
    """GPT-2 with ``scale_attn_by_inverse_layer_idx`` scales attention scores by 1/(layer_idx+1). A layer
    moved from ``old`` to ``new`` keeps its scores when the query weights are multiplied by
    (new+1)/(old+1); the live module's ``scaling`` is updated to what a reload computes."""
    factor = (new + 1) / (old + 1)
    with torch.no_grad():
        attn = get_submodule(layer, spec.qkv.rpartition(".")[0])
        q_width = attn.split_size  # heads * head_dim (smaller than n_embd after head pruning)
        qkv = weight_out_in(get_submodule(layer, spec.qkv))  # (3 * q_width, in): q rows first
        qkv[:q_width] *= factor
        get_submodule(layer, spec.qkv).bias[:q_width] *= factor
        attn.scaling /= factor
        if spec.cross_q and _has_submodule(layer, spec.cross_q):
            cross_q = get_submodule(layer, spec.cross_q)  # query only
            cross_q.weight *= factor
            cross_q.bias *= factor
            get_submodule(layer, spec.cross_q.rpartition(".")[0]).scaling /= factor


def _has_submodule(root: nn.Module, path: str) -> bool:
    try:
        root.get_submodule(path)
    except AttributeError:
        return False
    return True


def drop_layers(model: nn.Module, indices) -> nn.Module:
    """Remove the transformer blocks ``indices`` in place and return ``model``.

    The result saves with ``save_pretrained`` and reloads with stock transformers to the same function.
    Raises :class:`SurgeryError` (nothing changed) on duplicate or out-of-range indices or when every
    layer would be dropped, and :class:`UnsupportedArchitectureError` for families outside the table.
    """
    spec = get_arch(model)
    layers = get_layers(model)
    config = model.config
    n = len(layers)
    if config_num_layers(model) != n:
        raise SurgeryError(
            f"config.{spec.num_layers_key}={config_num_layers(model)} but the model has {n} "
            f"layers; the model was modified outside hf_compress"
        )
    drop = _check_indices(indices, n, "indices")
    if len(drop) == n:
        raise SurgeryError(f"`indices` {drop} drops all {n} layers; keep at least one")
    if not drop:
        return model
    keep = [i for i in range(n) if i not in set(drop)]

    # ---- plan: compute every new value before changing anything ----
    lists = {k: type(v)(v[i] for i in keep) for k, v in _per_layer_lists(config, spec, n).items()}
    keyed = {k: _renumber(getattr(config, k), keep) for k in _LAYER_KEYED if getattr(config, k, None)}
    thresholds = {
        k: _new_threshold(config, k, getattr(config, "layer_types", None), lists.get("layer_types"), keep, n)
        for k in spec.layer_threshold_keys
    }
    fold = bool(spec.attn_layer_scale_key and getattr(config, spec.attn_layer_scale_key, False))
    if fold:  # fail here, not half-way through the folding
        for i in keep:
            attn = get_submodule(layers[i], spec.qkv.rpartition(".")[0])
            if not hasattr(attn, "split_size"):
                raise SurgeryError(f"layer {i} has no {spec.qkv.rpartition('.')[0]}.split_size; cannot fold its "
                                   f"attention scale")
    _, parent = layers_parent(model)

    # ---- apply ----
    for new, old in enumerate(keep):
        layer = layers[old]
        if fold and new != old:
            _fold_layer_scale(layer, spec, old, new)
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    set_layers(model, nn.ModuleList([layers[i] for i in keep]))
    setattr(config, spec.num_layers_key, len(keep))
    for key, value in {**lists, **keyed}.items():
        setattr(config, key, value)
    for key, value in thresholds.items():
        if value is not None:
            setattr(config, key, value)
    for attr in ("n_layers", "num_layers", "num_hidden_layers"):  # e.g. DistilBERT's Transformer.n_layers
        if isinstance(getattr(parent, attr, None), int) and getattr(parent, attr) == n:
            setattr(parent, attr, len(keep))
    logger.info("dropped layers %s of %d (%s); kept %s", drop, n, spec.family, keep)
    return model


def spread_layers(total: int, k: int) -> list[int]:
    """``k`` layer indices out of ``total`` spread evenly, first and last included (``k >= 2``)."""
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= total:
        raise SurgeryError(
            f"`num_layers` must be an int in [2, {total}] (the teacher has {total} layers), "
            f"got {k!r}; for a one-layer student pass keep=[i]"
        )
    return [math.floor(i * (total - 1) / (k - 1) + 0.5) for i in range(k)]


def student_from_teacher(teacher: nn.Module, keep=None, num_layers: int | None = None) -> nn.Module:
    """A new model with the teacher's layers ``keep`` (or ``num_layers`` spread evenly, first and last
    included); embeddings, heads and norms are copied. The teacher is not modified.

    The student is trainable (every parameter requires grad, training mode as the teacher's) even when the
    teacher was frozen, e.g. by a ``DistillationTrainer`` that used it before."""
    get_arch(teacher)
    total = len(get_layers(teacher))
    if (keep is None) == (num_layers is None):
        raise SurgeryError(
            f"pass exactly one of `keep` (layer indices) or `num_layers` (a count), got "
            f"keep={keep!r}, num_layers={num_layers!r}"
        )
    if keep is not None:
        values = list(keep) if isinstance(keep, Iterable) and not isinstance(keep, (str, bytes)) else keep
        kept = _check_indices(values, total, "keep")
        if not kept:
            raise SurgeryError("`keep` is empty; keep at least one layer")
        if kept != values:
            raise SurgeryError(
                f"`keep` must be increasing layer indices (layers keep their order), got "
                f"{values!r}; use {kept!r}"
            )
    else:
        kept = spread_layers(total, num_layers)
    student = copy.deepcopy(teacher)
    drop_layers(student, [i for i in range(total) if i not in set(kept)])
    student.requires_grad_(True)
    return student
