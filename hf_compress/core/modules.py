"""Module helpers every method shares: the ``[out, in]`` view of a projection's weight, replacing a module by
its dotted name, and running a model in eval mode (its train/eval mode restored even on an error).

A projection is an ``nn.Linear`` (weight ``[out, in]``) or a GPT-2 ``transformers.pytorch_utils.Conv1D``
(weight ``[in, out]``, ``nf`` = out, ``nx`` = in). Code that edits or scores weights works in the ``[out, in]``
view from :func:`weight_out_in` and never asks which of the two it has.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

__all__ = ["PROJECTION_TYPES", "eval_mode", "in_features", "is_conv1d", "is_projection", "model_device",
           "native_bf16_cpu", "out_features", "set_module", "to_weight_layout", "weight_out_in"]

#: the projection classes methods act on
PROJECTION_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, Conv1D)


def is_conv1d(module: nn.Module) -> bool:
    """True for GPT-2's ``Conv1D`` (weight stored ``[in, out]``)."""
    return isinstance(module, Conv1D)


def is_projection(module: nn.Module) -> bool:
    """True for an ``nn.Linear`` or a ``Conv1D``."""
    return isinstance(module, PROJECTION_TYPES)


def weight_out_in(module: nn.Module) -> torch.Tensor:
    """The weight as ``[out, in]``: the parameter itself for ``nn.Linear``, a transposed view for ``Conv1D``
    (writes through the view change the weight). Not detached."""
    return module.weight.t() if is_conv1d(module) else module.weight


def to_weight_layout(module: nn.Module, out_in: torch.Tensor) -> torch.Tensor:
    """An ``[out, in]`` tensor (a mask, a new weight) in ``module``'s own weight layout, contiguous."""
    return out_in.t().contiguous() if is_conv1d(module) else out_in


def out_features(module: nn.Module) -> int:
    return weight_out_in(module).shape[0]


def in_features(module: nn.Module) -> int:
    return weight_out_in(module).shape[1]


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` (``""`` is not allowed: the model itself)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model without tensors."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module, no_grad: bool = True):
    """``model.eval()`` (and ``torch.no_grad()`` unless ``no_grad=False``) for the block; the model's
    train/eval flag of every submodule is restored in ``finally``."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad() if no_grad else contextlib.nullcontext():
            yield model
    finally:
        for m, training in modes:
            m.training = training


def native_bf16_cpu() -> bool:
    """True when this CPU computes bf16 natively (AVX512-BF16 or AMX tiles). Only there does bf16 autocast
    speed up CPU training; elsewhere torch emulates bf16 (8x slower than fp32 for a 1024x1536x384 matmul on an
    AVX2-only EPYC), so benchmarks use it to pick fp32."""
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if callable(check))
