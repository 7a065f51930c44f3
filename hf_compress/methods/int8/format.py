"""The compressed-tensors on-disk format for symmetric per-channel int8 weights, written with torch alone.

Two schemes, exactly as the ``compressed-tensors`` library (0.20) writes them:

* ``w8a16`` -> format ``pack-quantized``: ``weight_packed`` int32 ``[out, ceil(in / 4)]`` holding the bytes
  ``q + 128`` (little-endian, four per word), ``weight_shape`` int64 ``[2]``, ``weight_scale`` ``[out, 1]``.
* ``w8a8`` -> format ``int-quantized``: ``weight`` int8 ``[out, in]``, ``weight_scale`` ``[out, 1]``, with
  dynamic symmetric per-token int8 ``input_activations`` in the config.

The scale is ``row_absmax / 127.5`` and ``q = clamp(round(w / scale), -128, 127)``, as compressed-tensors'
``calculate_qparams`` and ``quantize`` compute them. This module is a leaf (torch, errors and the light ``config``) so that
both :mod:`hf_compress.methods.int8.quantize` and the loader in :mod:`hf_compress.methods.int8.loader` can use it.
"""

from __future__ import annotations

import copy
import math

import torch

from ...errors import QuantizationError
from .config import MODES

__all__ = [
    "QUANT_METHOD",
    "FORMATS",
    "MODES",
    "pack_int8",
    "unpack_int8",
    "quantize_per_channel",
    "build_quantization_config",
    "parse_quantization_config",
]

QUANT_METHOD = "compressed-tensors"
CT_VERSION = "0.20.1"  # the compressed-tensors release whose output this module reproduces
FORMATS = {"w8a16": "pack-quantized", "w8a8": "int-quantized"}
MODE_OF_FORMAT = {fmt: mode for mode, fmt in FORMATS.items()}

_WEIGHTS = {
    "dynamic": False,
    "group_size": None,
    "num_bits": 8,
    "strategy": "channel",
    "symmetric": True,
    "type": "int",
}
_TOKEN_ACTS = {
    "dynamic": True,
    "group_size": None,
    "num_bits": 8,
    "strategy": "token",
    "symmetric": True,
    "type": "int",
}


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: ``weight`` [out, in] float -> (q int8 [out, in], scale [out, 1]).

    The scale keeps the weight's dtype, as compressed-tensors stores it.
    """
    w = weight.detach()
    absmax = w.abs().amax(dim=1, keepdim=True)  # (out, 1)
    scale = absmax / torch.tensor(127.5, dtype=w.dtype, device=w.device)
    scale = torch.where(
        scale == 0, torch.tensor(torch.finfo(w.dtype).eps, dtype=w.dtype, device=w.device), scale
    )
    q = torch.round(w / scale).clamp_(-128, 127).to(torch.int8)
    return q, scale


def pack_int8(q: torch.Tensor) -> torch.Tensor:
    """int8 [out, in] -> int32 [out, ceil(in / 4)] holding the bytes ``q + 128`` (compressed-tensors')."""
    if q.dtype != torch.int8 or q.dim() != 2:
        raise QuantizationError(f"pack_int8 needs a 2-d int8 tensor, got {q.dtype} of shape {tuple(q.shape)}")
    rows, cols = q.shape
    padded = math.ceil(cols / 4) * 4
    u = (q.to(torch.int16) + 128).to(torch.uint8)  # (out, in) in [0, 255]
    if padded != cols:
        u = torch.nn.functional.pad(u, (0, padded - cols))
    # bytes b0..b3 -> b0 | b1 << 8 | b2 << 16 | b3 << 24, independent of the host's byte order
    u = u.view(rows, padded // 4, 4).to(torch.int64)
    words = u[..., 0] | (u[..., 1] << 8) | (u[..., 2] << 16) | (u[..., 3] << 24)  # (out, in/4) in [0, 2^32)
    words = torch.where(words >= 2**31, words - 2**32, words)
    return words.to(torch.int32).contiguous()


def unpack_int8(packed: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`pack_int8`: int32 [out, ceil(in / 4)] and the original ``shape`` -> int8."""
    rows, cols = (int(s) for s in shape)
    if packed.dtype != torch.int32:
        raise QuantizationError(f"`weight_packed` must be int32, got {packed.dtype}; re-save the checkpoint")
    if tuple(packed.shape) != (rows, math.ceil(cols / 4)):
        raise QuantizationError(
            f"`weight_packed` has shape {tuple(packed.shape)} but `weight_shape` {[rows, cols]} needs "
            f"{(rows, math.ceil(cols / 4))}; the checkpoint is inconsistent"
        )
    w = packed.to(torch.int64) & 0xFFFFFFFF
    parts = torch.stack([(w >> s) & 0xFF for s in (0, 8, 16, 24)], dim=-1)  # (out, in/4, 4)
    return (parts.reshape(rows, -1)[:, :cols] - 128).to(torch.int8).contiguous()


def build_quantization_config(mode: str, ignore: list[str], targets: list[str]) -> dict:
    """The ``quantization_config`` dict of ``config.json`` for ``mode``, as compressed-tensors writes it."""
    if mode not in MODES:
        raise QuantizationError(f"`mode` must be one of {MODES}, got {mode!r}")
    fmt = FORMATS[mode]
    group = {
        "format": fmt,
        "input_activations": dict(_TOKEN_ACTS) if mode == "w8a8" else None,
        "output_activations": None,
        "targets": list(targets),
        "weights": dict(_WEIGHTS),
    }
    return {
        "config_groups": {"group_0": group},
        "format": fmt,
        "global_compression_ratio": None,
        "ignore": list(ignore),
        "kv_cache_scheme": None,
        "moe_sparsity_config": None,
        "quant_method": QUANT_METHOD,
        "quantization_status": "compressed",
        "sparsity_config": {},
        "transform_config": {},
        "version": CT_VERSION,
    }


def _check_args(args, expected: dict, where: str) -> None:
    if not isinstance(args, dict):
        raise QuantizationError(f"{where} must be a mapping like {expected}, got {args!r}")
    for key, want in expected.items():
        if key == "group_size":
            continue
        got = args.get(key, want if key == "dynamic" else None)
        if got != want:
            raise QuantizationError(
                f"unsupported compressed-tensors scheme: {where}.{key} is {got!r}, hf_compress loads only "
                f"{key}={want!r} (symmetric per-channel int8 weights, dynamic per-token int8 activations); "
                "install the `compressed-tensors` package to load other schemes"
            )


def parse_quantization_config(qc) -> tuple[str, list[str], list[str]]:
    """Validate a checkpoint's ``quantization_config`` -> (mode, targets, ignore).

    Anything hf_compress cannot load exactly (other bit widths, group or asymmetric weights, static
    activations, several groups, sparsity, transforms, a decompressed status) raises QuantizationError.
    """
    qc = copy.deepcopy(qc.to_dict() if hasattr(qc, "to_dict") else dict(qc))
    if qc.get("quant_method") != QUANT_METHOD:
        raise QuantizationError(f"quant_method must be {QUANT_METHOD!r}, got {qc.get('quant_method')!r}")
    status = qc.get("quantization_status", "compressed")
    if status != "compressed":
        raise QuantizationError(f"quantization_status must be 'compressed', got {status!r}")
    for key in ("sparsity_config", "transform_config", "kv_cache_scheme"):
        if qc.get(key):
            raise QuantizationError(f"`{key}` is not supported by hf_compress's int8 loader, got {qc[key]!r}")
    groups = qc.get("config_groups") or {}
    if len(groups) != 1:
        raise QuantizationError(
            f"expected exactly one entry in `config_groups`, got {len(groups)}: {list(groups)}"
        )
    ((name, group),) = groups.items()
    fmt = group.get("format") or qc.get("format")
    if fmt not in MODE_OF_FORMAT:
        raise QuantizationError(
            f"unsupported compressed-tensors format {fmt!r} in config_groups.{name}; hf_compress loads "
            f"{sorted(MODE_OF_FORMAT)}"
        )
    mode = MODE_OF_FORMAT[fmt]
    _check_args(group.get("weights"), _WEIGHTS, f"config_groups.{name}.weights")
    acts = group.get("input_activations")
    if mode == "w8a8":
        _check_args(acts, _TOKEN_ACTS, f"config_groups.{name}.input_activations")
    elif acts is not None:
        raise QuantizationError(f"format 'pack-quantized' must have no input_activations, got {acts!r}")
    if group.get("output_activations") is not None:
        raise QuantizationError(f"output_activations are not supported, got {group['output_activations']!r}")
    targets = group.get("targets") or []
    if not targets or not all(isinstance(t, str) for t in targets):
        raise QuantizationError(f"config_groups.{name}.targets must be a list of names, got {targets!r}")
    return mode, list(targets), list(qc.get("ignore") or [])
