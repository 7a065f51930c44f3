"""Keep or zero output rows and input columns of an ``nn.Linear`` / GPT-2 ``Conv1D``, in place.

Indices are in the ``[out, in]`` view (:func:`~hf_compress.core.modules.weight_out_in`): ``rows`` are output
features, ``cols`` input features, whatever layout the module stores. Keeping replaces the parameters (new
tensors, ``requires_grad`` kept) and updates the module's size attributes (``out_features`` /
``in_features``, or ``nf`` / ``nx``); zeroing writes zeros into the existing tensors.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .modules import is_conv1d, weight_out_in

__all__ = ["keep_in_cols", "keep_out_rows", "zero_in_cols", "zero_out_rows"]


def _replace(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.clone(memory_format=torch.contiguous_format),
                                       requires_grad=old.requires_grad))


def _keep(module: nn.Module, index: torch.Tensor, rows: bool) -> None:
    with torch.no_grad():
        weight = weight_out_in(module)
        weight = weight[index] if rows else weight[:, index]  # (len(index), in) or (out, len(index))
        _replace(module, "weight", weight.t() if is_conv1d(module) else weight)
        if rows and module.bias is not None:
            _replace(module, "bias", module.bias[index])
        size = {(True, True): "nf", (True, False): "nx", (False, True): "out_features", (False, False): "in_features"}
        setattr(module, size[is_conv1d(module), rows], len(index))


def keep_out_rows(module: nn.Module, rows: torch.Tensor) -> None:
    """Keep only output features ``rows`` (weight and bias), in the order given."""
    _keep(module, rows, rows=True)


def keep_in_cols(module: nn.Module, cols: torch.Tensor) -> None:
    """Keep only input features ``cols``, in the order given (the bias is unchanged)."""
    _keep(module, cols, rows=False)


def zero_out_rows(module: nn.Module, rows: torch.Tensor) -> None:
    """Zero output features ``rows`` (weight and bias)."""
    with torch.no_grad():
        weight_out_in(module)[rows] = 0
        if module.bias is not None:
            module.bias[rows] = 0


def zero_in_cols(module: nn.Module, cols: torch.Tensor) -> None:
    """Zero input features ``cols``."""
    with torch.no_grad():
        weight_out_in(module)[:, cols] = 0
