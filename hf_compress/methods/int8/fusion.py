"""Run-time fusions for :class:`Int8Linear` layers; the state dict and the checkpoint never change.

1. **Shared input**: sibling layers that read the same tensor (q/k/v; Llama's gate/up) become one int8
   matmul over their concatenated weights: the activation is quantized once and one larger ``_int_mm``
   runs. Each layer's ``weight`` / ``weight_scale`` become row views of the group's tensors (no extra
   memory). The first sibling called computes every output and keeps the others' for their own call,
   keyed on the very input tensor (held, so its id cannot be reused, and checked for in-place changes).
2. **Activation epilogue**: an MLP input layer followed by GELU (BERT, DistilBERT, GPT-2) applies the GELU
   in the matmul's rescale pass; the parent's activation module becomes ``nn.Identity``. Each fusion is
   checked on a random input against the unfused module and undone if the outputs differ.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
from transformers.activations import GELUActivation, NewGELUActivation

from ...arch import get_arch, get_layers, get_submodule
from .kernels import int8_linear

__all__ = ["SharedInputGroup", "fuse_int8", "unfuse_int8"]

logger = logging.getLogger(__name__)

# activation module types whose function the int8 epilogue reproduces
_ACTS = {GELUActivation: "gelu", nn.GELU: "gelu", NewGELUActivation: "gelu_tanh"}


class SharedInputGroup:
    """Int8Linear siblings multiplied as one ``[sum(out), in]`` int8 matrix."""

    def __init__(self, members: list[nn.Module]):
        self.members = members
        self.splits = [m.out_features for m in members]
        self._rebuild()
        self._x, self._version, self._pending = None, -1, {}

    def _rebuild(self) -> None:
        ms = self.members
        self.weight = torch.cat([m.weight for m in ms])  # (sum out, in) contiguous
        self.scale = torch.cat([m.weight_scale for m in ms])  # (sum out, 1)
        biases = [
            m.bias
            if m.bias is not None
            else torch.zeros(m.out_features, dtype=self.scale.dtype, device=self.scale.device)
            for m in ms
        ]
        self.bias = None if all(m.bias is None for m in ms) else torch.cat([b.detach() for b in biases])
        start = 0
        for m, n in zip(ms, self.splits):  # members now view the group's storage
            m._buffers["weight"] = self.weight[start : start + n]
            m._buffers["weight_scale"] = self.scale[start : start + n]
            start += n

    def _stale(self) -> bool:
        w_ptr, s_ptr = self.weight.untyped_storage().data_ptr(), self.scale.untyped_storage().data_ptr()
        return any(
            m.weight.untyped_storage().data_ptr() != w_ptr
            or m.weight_scale.untyped_storage().data_ptr() != s_ptr
            or m.weight.device != self.weight.device
            for m in self.members
        )

    def __call__(self, member: nn.Module, x: torch.Tensor) -> torch.Tensor:
        version = -1 if x.is_inference() else x._version  # inference tensors keep no version counter
        if self._x is x and self._version == version and member in self._pending:
            return self._pending.pop(member)
        if self._stale():  # a member was moved or reassigned (``.to()``, ``load_state_dict``): regroup
            self._rebuild()
        lead = x.shape[:-1]
        head = self.members[0]
        y = int8_linear(
            x.reshape(-1, head.in_features), self.weight, self.scale, self.bias, head.mode, head.use_compile
        )  # (M, sum out)
        outs = [o.reshape(*lead, o.shape[-1]) for o in y.split(self.splits, dim=-1)]
        self._pending = {m: o for m, o in zip(self.members, outs) if m is not member}
        self._x, self._version = x, version
        return outs[self.members.index(member)]


def _siblings(layer: nn.Module, spec) -> list[list[str]]:
    groups = []
    if spec.q and spec.k and spec.v:
        groups.append([spec.q, spec.k, spec.v])
    if len(spec.mlp_in) > 1:
        groups.append(list(spec.mlp_in))
    return groups


@torch.no_grad()
def _fuse_act(layer: nn.Module, spec) -> bool:
    """Fold the MLP activation ``spec.mlp_act`` into ``spec.mlp_in[0]``'s rescale pass, when the two are
    siblings in one module (BERT ``intermediate``, DistilBERT ``ffn``, GPT-2 ``mlp``) and it is a GELU."""
    lin_parent, _, child = spec.mlp_in[0].rpartition(".")
    act_parent, _, attr = (spec.mlp_act or "").rpartition(".")
    if not spec.mlp_act or act_parent != lin_parent:
        return False
    parent = get_submodule(layer, lin_parent) if lin_parent else layer
    lin, act = getattr(parent, child), get_submodule(layer, spec.mlp_act)
    if type(act) not in _ACTS or lin.post_act is not None:
        return False
    x = torch.randn(2, 3, lin.in_features, dtype=lin.weight_scale.dtype, device=lin.weight.device)
    use_compile, lin.use_compile = lin.use_compile, False  # check with the eager kernel: no compile here
    try:
        ref = parent(x)
        lin.post_act = _ACTS[type(act)]
        setattr(parent, attr, nn.Identity())
        ok = torch.allclose(parent(x), ref, rtol=1e-3, atol=1e-4)
    except Exception:  # noqa: BLE001 - a parent that is not a plain MLP: leave it alone
        ok = False
    lin.use_compile = use_compile
    if not ok:
        lin.post_act = None
        setattr(parent, attr, act)
    return ok


def fuse_int8(model: nn.Module) -> dict[str, int]:
    """Apply both fusions wherever the architecture table shows them; returns counts per kind."""
    from .layer import Int8Linear

    counts = {"shared_input_groups": 0, "fused_activations": 0}
    spec = get_arch(model)
    for layer in get_layers(model):
        for paths in _siblings(layer, spec):
            mods = [get_submodule(layer, p) for p in paths]
            if (
                all(isinstance(m, Int8Linear) and m._group is None for m in mods)
                and len({(m.mode, m.in_features, m.use_compile) for m in mods}) == 1
            ):
                group = SharedInputGroup(mods)
                for m in mods:
                    m._group = group
                counts["shared_input_groups"] += 1
        if len(spec.mlp_in) == 1 and isinstance(get_submodule(layer, spec.mlp_in[0]), Int8Linear):
            counts["fused_activations"] += _fuse_act(layer, spec)
    logger.info("int8 fusions: %s", counts)
    return counts


def unfuse_int8(model: nn.Module) -> None:
    """Undo :func:`fuse_int8` for shared inputs (layers get their own weight copies back)."""
    from .layer import Int8Linear

    for m in model.modules():
        if isinstance(m, Int8Linear) and m._group is not None:
            m._buffers["weight"] = m.weight.clone()
            m._buffers["weight_scale"] = m.weight_scale.clone()
            m._group = None
