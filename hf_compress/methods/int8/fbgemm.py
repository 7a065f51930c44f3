"""The W8A8 matmul for x86 CPUs without VNNI: fbgemm's dynamic quantized linear, per token.

On an AVX2-only CPU ``torch._int_mm`` runs a scalar loop (37x slower than an fp32 GEMM at
1024x1536x384 on an AVX2 EPYC), while fbgemm's ``quantized::linear_dynamic`` is an AVX2 u8 x s8 GEMM
(1.24x faster than fp32 there). fbgemm quantizes its input per tensor; we keep the checkpoint's per-token
semantics by mapping each row's [min, max] onto [-1, 1] first (``x' = (x - mid) / half``) and undoing it on
the output (``y = half * x' w_hat^T + mid * sum_k w_hat``), so each token gets its own range, as in per-token
quantization; one extra row [1, -1, 0, ...] pins fbgemm's per-tensor range to exactly [-1, 1], so a token's
output never depends on the other tokens of the batch. Mapping [min, max] rather than [-absmax, absmax] gives
one-sided rows (after a GELU) the whole range: on a 1536->384 layer fed GELU outputs the error to the exact
product fell from 9.5% to about 5% (a symmetric reference: 4.3%).

**Rounding.** ``reduce_range=True``: activations are 7-bit (0..127 over the batch's [min, max]) because
AVX2's ``vpmaddubsw`` adds two u8 x s8 products into a saturating int16: with 7-bit activations a pair
is at most 2 x 127 x 128 = 32512 and the int32 sum is exact; with 8-bit ones it can saturate (measured:
on random 384x384 layers ``reduce_range=False`` had 1.8x the error of ``True``). The activation step is
therefore at most ``2 * absmax / 127`` per token, twice the reference's ``absmax / 127``, so the error
against the reference (:func:`.kernels.quantize_tokens` + exact int32 matmul) is bounded per output by
``1.5 * (absmax / 127) * sum|w_hat|`` (the reference's half step plus this kernel's, at most a full step:
``(max - min) / 2 / 127 <= absmax / 127``).

**API.** fbgemm packs a ``torch.qint8`` per-channel tensor, whose creation torch 2.13 deprecates
(pytorch/pytorch#184982, "use plain int8 and keep scales in the modeling code", i.e. torchao's
pattern); no non-deprecated op reaches fbgemm's packed GEMM. The one deprecated call,
``torch._make_per_channel_quantized_tensor``, happens once per weight when it is packed, with its warning
silenced here; activations never become quantized tensors. ``onednn::qlinear_pointwise`` (plain int8
tensors, not deprecated) was measured too: see benchmarks/int8.md for why it is not used.

The packed weight is cached per weight tensor (weakly keyed, repacked when the weight or scale changes
in place), so it costs one more copy of the int8 weights in memory. :func:`fbgemm_mm` is a custom op, so
``torch.compile`` treats it as one opaque kernel and still fuses the row scaling around it.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["fbgemm_available", "fbgemm_mm", "packed_count", "REDUCE_RANGE"]

REDUCE_RANGE = True  # 7-bit activations: exact int32 sums on AVX2 (see the module docstring)
_PACKED = WeakTensorKeyDictionary()  # int8 weight -> (its version, scale version, scale, packed params)
_STATS = {"packed": 0}


def fbgemm_available() -> bool:
    """True when torch was built with fbgemm (x86 wheels are)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def packed_count() -> int:
    """How many weights were packed so far in this process (a test checks the cache is hit)."""
    return _STATS["packed"]


def _version(t: torch.Tensor) -> int:
    return -1 if t.is_inference() else t._version


def _packed(w: torch.Tensor, w_scale: torch.Tensor):
    """(fbgemm's packed form of int8 ``w`` [N, K] with per-row scale ``w_scale`` [N, 1], the row sums of the
    dequantized weight [1, N]), cached per weight tensor."""
    hit = _PACKED.get(w)
    if hit is not None and hit[0] == _version(w) and hit[1] == _version(w_scale) and hit[2] is w_scale:
        return hit[3], hit[4]
    scales = w_scale.detach().reshape(-1).double()
    zeros = torch.zeros(w.shape[0], dtype=torch.long)
    with warnings.catch_warnings():  # the deprecation of quantized dtypes: see the module docstring
        warnings.simplefilter("ignore", UserWarning)
        qw = torch._make_per_channel_quantized_tensor(w.detach().contiguous(), scales, zeros, 0)
    engine = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "fbgemm"  # "x86" (the default) may pick onednn for some shapes
        packed = torch.ops.quantized.linear_prepack(qw, None)
    finally:
        torch.backends.quantized.engine = engine
    sums = (w.detach().double().sum(1) * scales).float()[None, :]  # (1, N)
    _PACKED[w] = (_version(w), _version(w_scale), w_scale, packed, sums)
    _STATS["packed"] += 1
    return packed, sums


@torch.library.custom_op("hf_compress::fbgemm_w8a8", mutates_args=())
def fbgemm_mm(x: torch.Tensor, half: torch.Tensor, mid: torch.Tensor, w: torch.Tensor,
              w_scale: torch.Tensor) -> torch.Tensor:
    """``x`` float32 (M + 1, K): M token rows mapped onto [-1, 1] (``x = (x_orig - mid) / half``) and the pin
    row; ``half``, ``mid`` (M, 1); w int8 (N, K); w_scale (N, 1) -> ``x_orig w_hat^T`` (M, N)."""
    packed, sums = _packed(w, w_scale)
    y = torch.ops.quantized.linear_dynamic(x.contiguous(), packed, REDUCE_RANGE)[: half.shape[0]]
    return y.mul_(half).addmm_(mid, sums)


@fbgemm_mm.register_fake
def _(x, half, mid, w, w_scale):
    return x.new_empty(half.shape[0], w.shape[0])


def _setup_context(ctx, inputs, output):
    x, half, mid, w, w_scale = inputs
    ctx.save_for_backward(x, half, w, w_scale)


def _backward(ctx, grad):
    """Straight-through: the rounding of ``x`` counted as identity, so the layer's gradient is that of
    ``x_orig w_hat^T``. Only so that a forward outside ``torch.no_grad`` (a plain ``model(**batch)``) runs
    this kernel; int8 weights get none."""
    x, half, w, w_scale = ctx.saved_tensors
    w_hat = w.to(grad.dtype) * w_scale.to(grad.dtype)  # (N, K)
    m = half.shape[0]
    grad_x = torch.zeros_like(x)
    grad_x[:m] = (grad * half) @ w_hat
    grad_half = (grad * (x[:m] @ w_hat.t())).sum(1, keepdim=True)
    grad_mid = (grad * w_hat.sum(1)[None, :]).sum(1, keepdim=True)
    return grad_x, grad_half, grad_mid, None, None


fbgemm_mm.register_autograd(_backward, setup_context=_setup_context)
