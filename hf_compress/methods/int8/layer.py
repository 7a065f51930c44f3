"""Int8Linear: a linear layer that keeps int8 weights in memory and multiplies with int8 kernels.

Weights are symmetric per-output-channel int8 ``[out, in]`` with a ``[out, 1]`` scale. The state dict is the
compressed-tensors layout of its mode (see :mod:`hf_compress.methods.int8.format`), so a model holding
these layers saves a compressed-tensors checkpoint with plain ``save_pretrained``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ...core.modules import is_projection, weight_out_in
from ...errors import QuantizationError
from .format import MODES, pack_int8, quantize_per_channel, unpack_int8
from .kernels import int8_linear

__all__ = ["Int8Linear", "float_weight"]


class Int8Linear(nn.Module):
    """A linear layer holding int8 weights ``[out, in]`` and a per-channel scale ``[out, 1]``.

    Its state dict is the compressed-tensors layout: ``weight`` + ``weight_scale`` for ``w8a8``
    (int-quantized); ``weight_packed`` + ``weight_shape`` + ``weight_scale`` for ``w8a16`` (pack-quantized).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        mode: str = "w8a8",
        dtype: torch.dtype = torch.float32,
        device=None,
    ):
        super().__init__()
        if mode not in MODES:
            raise QuantizationError(f"`mode` must be one of {MODES}, got {mode!r}")
        self.in_features, self.out_features, self.mode = in_features, out_features, mode
        self.use_compile = False
        self.post_act: str | None = None  # an activation fused into the output (see int8_fusion)
        self._group = None  # siblings reading the same input, multiplied as one (see int8_fusion)
        self.register_buffer(
            "weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("weight_scale", torch.empty(out_features, 1, dtype=dtype, device=device))
        if bias:
            self.bias = nn.Parameter(
                torch.empty(out_features, dtype=dtype, device=device), requires_grad=False
            )
        else:
            self.register_parameter("bias", None)

    @classmethod
    def from_float(
        cls,
        module: nn.Module,
        mode: str = "w8a8",
        qweight: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
    ) -> "Int8Linear":
        """Quantize an ``nn.Linear`` / GPT-2 ``Conv1D``: round to nearest, or take ``qweight``, ``scale``."""
        weight = float_weight(module)  # (out, in)
        if qweight is None:
            qweight, scale = quantize_per_channel(weight)
        out_f, in_f = weight.shape
        layer = cls(
            in_f, out_f, bias=module.bias is not None, mode=mode, dtype=weight.dtype, device=weight.device
        )
        layer.weight.copy_(qweight)
        layer.weight_scale.copy_(scale.to(weight.dtype))
        if module.bias is not None:
            layer.bias.data.copy_(module.bias.detach())
        return layer

    def dequantize(self) -> torch.Tensor:
        """The float weight ``[out, in]`` these int8 values stand for (for checks, not used in forward)."""
        return self.weight.to(self.weight_scale.dtype) * self.weight_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._group is not None:
            return self._group(self, x)
        lead = x.shape[:-1]
        y = int8_linear(
            x.reshape(-1, self.in_features),
            self.weight,
            self.weight_scale,
            self.bias,
            self.mode,
            self.use_compile,
            self.post_act,
        )  # (M, out)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        fused = f", post_act={self.post_act}" if self.post_act else ""
        fused += ", shares input" if self._group is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, mode={self.mode}{fused}"
        )

    # --- compressed-tensors state-dict layout -------------------------------------------------------
    def expect_packed(self) -> None:
        """Before a ``w8a16`` checkpoint is loaded into this (meta) module: hold the on-disk tensors."""
        device = self.weight.device
        placeholder = torch.empty(
            0, dtype=torch.int8, device=device
        )  # not saved; model init code may read it
        placeholder._is_hf_initialized = True
        self.register_buffer("weight", placeholder, persistent=False)
        cols = (self.in_features + 3) // 4
        self.register_buffer(
            "weight_packed", torch.empty(self.out_features, cols, dtype=torch.int32, device=device)
        )
        self.register_buffer("weight_shape", torch.empty(2, dtype=torch.int64, device=device))

    def finish_loading(self, name: str = "") -> None:
        """After loading: check every tensor arrived with the right dtype and shape, unpack ``w8a16``."""
        where = f"layer {name!r}" if name else "Int8Linear"
        tensors = ("weight_packed", "weight_shape") if "weight_packed" in self._buffers else ("weight",)
        for key in tensors + ("weight_scale",):
            t = self._buffers[key]
            if t.is_meta or not getattr(t, "_is_hf_initialized", False):
                raise QuantizationError(
                    f"{where}: `{key}` is missing from the checkpoint; it is not a complete "
                    f"compressed-tensors {self.mode} checkpoint"
                )
        if not self.weight_scale.is_floating_point() or tuple(self.weight_scale.shape) != (
            self.out_features,
            1,
        ):
            raise QuantizationError(
                f"{where}: `weight_scale` must be float [{self.out_features}, 1], got "
                f"{self.weight_scale.dtype} {list(self.weight_scale.shape)}"
            )
        if "weight_packed" in self._buffers:
            shape = [int(s) for s in self._buffers["weight_shape"].tolist()]
            if shape != [self.out_features, self.in_features]:
                raise QuantizationError(
                    f"{where}: `weight_shape` is {shape}, the model needs "
                    f"{[self.out_features, self.in_features]}"
                )
            q = unpack_int8(self._buffers.pop("weight_packed"), shape)
            del self._buffers["weight_shape"]
            self._non_persistent_buffers_set.discard("weight")
            self.register_buffer("weight", q)
        elif self.weight.dtype != torch.int8:
            raise QuantizationError(
                f"{where}: `weight` must be int8 in an int-quantized checkpoint, got "
                f"{self.weight.dtype}; re-export it with hf_compress.quantize_int8"
            )

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        if "weight_packed" in self._buffers:  # mid-load placeholders
            return super()._save_to_state_dict(destination, prefix, keep_vars)
        shared = self._group is not None  # weight / scale are views of the group's: save own copies
        if self.mode == "w8a16":
            destination[prefix + "weight_packed"] = pack_int8(self.weight)
            destination[prefix + "weight_shape"] = torch.tensor([self.out_features, self.in_features])
        else:
            destination[prefix + "weight"] = self.weight.clone() if shared else self.weight
        destination[prefix + "weight_scale"] = self.weight_scale.clone() if shared else self.weight_scale
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        packed, shape = state_dict.get(prefix + "weight_packed"), state_dict.get(prefix + "weight_shape")
        if packed is not None and shape is not None and "weight" in self._buffers:
            state_dict = dict(state_dict)
            state_dict[prefix + "weight"] = unpack_int8(
                state_dict.pop(prefix + "weight_packed"), shape.tolist()
            )
            del state_dict[prefix + "weight_shape"]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)


def float_weight(module: nn.Module) -> torch.Tensor:
    """The float weight of an ``nn.Linear`` or GPT-2 ``Conv1D`` as ``[out, in]``."""
    if is_projection(module):
        return weight_out_in(module).detach().contiguous()
    raise QuantizationError(f"Int8Linear replaces nn.Linear or GPT-2 Conv1D, got {type(module).__name__}")
