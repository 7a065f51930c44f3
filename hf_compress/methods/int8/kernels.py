"""Pure tensor kernels behind :class:`hf_compress.methods.int8.quantize.Int8Linear`.

``w8a8``: per-token symmetric int8 activations (absmax / 127), ``torch._int_mm`` with the int8 weight kept
``[out, in]`` contiguous and passed as ``w.t()`` (the fast CPU layout), then one rescale by
``x_scale * w_scale``. ``w8a16``: 16-bit activations times the int8 weight; on CPU
``aten._weight_int8pack_mm`` for a few rows (fast there), else a bf16/fp16 product with the weight
converted for that call (O(out·in) next to the O(rows·out·in) product). Optionally everything runs through
``torch.compile`` so the quantize and rescale passes fuse around the matmul; a compile failure makes that one
kernel (mode, shape, dtype, device) run eagerly from then on, with one warning; other kernels and other
models keep compiling.
"""

from __future__ import annotations

import logging
import types

import torch
import torch.nn.functional as F

__all__ = ["int8_linear", "w8a8_linear", "w8a16_linear", "quantize_tokens", "with_own_code", "kernel_status",
           "SMALL_M", "int8pack_fits"]

logger = logging.getLogger(__name__)

SMALL_M = 8  # rows up to which the CPU w8a16 path uses aten._weight_int8pack_mm (measured fast at M=1)
PACK_K = 16  # aten._weight_int8pack_mm reads K in blocks: other widths segfault or return garbage (CPU)
_HALF = (torch.bfloat16, torch.float16)


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: x (M, K) float -> (xq int8 (M, K), scale float32 (M, 1))."""
    xf = x.float()
    scale = xf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # (M, 1)
    return torch.round(xf / scale).to(torch.int8), scale


def _int_mm(a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """a int8 (M, K) @ w int8 (N, K).T -> int32 (M, N)."""
    m, k = a.shape
    if a.is_cuda and (m <= 16 or k % 8 or w.shape[0] % 8):  # CUDA _int_mm shape rules
        return (a.double() @ w.double().t()).to(torch.int32)  # exact: |sum| < 2^53
    return torch._int_mm(a, w.t())


def _activate(y: torch.Tensor, act: str | None) -> torch.Tensor:
    if act is None:
        return y
    return F.gelu(y, approximate="tanh" if act == "gelu_tanh" else "none")


def w8a8_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, act: str | None = None
):
    """x (M, K) float, w int8 (N, K), w_scale (N, 1) -> act(x w^T + b) (M, N) in x's dtype."""
    xq, x_scale = quantize_tokens(x)
    acc = _int_mm(xq, w)  # (M, N) int32
    y = acc.float() * x_scale * w_scale.float().t()  # (M, N)
    if bias is not None:
        y = y + bias.float()
    return _activate(y.to(x.dtype), act)


def int8pack_fits(x: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``aten._weight_int8pack_mm`` may be called: CPU, at most :data:`SMALL_M` rows, the input
    width a multiple of :data:`PACK_K` and a contiguous ``[out, in]`` weight. Outside these rules the kernel
    reads out of bounds (measured: garbage for width 12, SIGSEGV for width 1-7 and a tiny GPT-2 of width 24)."""
    return (
        x.device.type == "cpu"
        and x.dim() == 2
        and x.shape[0] <= SMALL_M
        and x.shape[1] % PACK_K == 0
        and w.dim() == 2
        and w.is_contiguous()
    )


def w8a16_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, act: str | None = None
):
    """x (M, K) float, w int8 (N, K), w_scale (N, 1) -> act(x w^T + b) (M, N) in x's dtype, 16-bit math."""
    cdtype = x.dtype if x.dtype in _HALF else (torch.bfloat16 if x.device.type == "cpu" else torch.float16)
    xc = x.to(cdtype)
    if int8pack_fits(xc, w):
        y = torch.ops.aten._weight_int8pack_mm(xc.contiguous(), w, w_scale.reshape(-1).to(cdtype))  # (M, N)
    else:
        y = F.linear(xc, w.to(cdtype) * w_scale.to(cdtype))  # (M, N)
    if bias is not None:
        y = y + bias.to(cdtype)
    return _activate(y.to(x.dtype), act)


_KERNELS = {"w8a8": w8a8_linear, "w8a16": w8a16_linear}
_COMPILED: dict[tuple, object] = {}  # kernel key -> its compiled function, or None once its compile failed


def with_own_code(fn, name: str):
    """``fn`` as a new function with a code object of its own, named ``name``. Dynamo keeps compiled variants
    per code object, at most 8 (``recompile_limit``): callers that each need their own variants (one kernel
    per shape, one block per layer) must not share a code object, or the 9th and later silently run eagerly."""
    code = fn.__code__.replace(co_name=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _key(mode: str, x: torch.Tensor, w: torch.Tensor, bias, act) -> tuple:
    return (mode, w.shape[0], w.shape[1], bias is None, act, x.dtype, x.device.type)


def _compiled(key: tuple):
    """One compiled kernel per (mode, out, in, bias, act, dtype, device): each gets its own code object, so
    dynamo's per-function recompile limit is never reached and ``in``/``out`` stay static (fast
    reductions); only the row count is dynamic. ``None`` once that kernel failed to compile."""
    if key not in _COMPILED:
        base = _KERNELS[key[0]]
        _COMPILED[key] = torch.compile(with_own_code(base, f"{base.__name__}_{len(_COMPILED)}"))
    return _COMPILED[key]


def kernel_status() -> dict[tuple, str]:
    """Kernel key -> ``"compiled"`` or ``"eager"`` (its compile failed) for every kernel asked for so far."""
    return {key: "eager" if fn is None else "compiled" for key, fn in _COMPILED.items()}


def int8_linear(x, w, w_scale, bias, mode: str, use_compile: bool = False, act: str | None = None):
    """Dispatch to the ``mode`` kernel, compiled when asked and possible."""
    fn = _KERNELS[mode]
    if not use_compile or (torch.is_grad_enabled() and x.requires_grad):
        return fn(x, w, w_scale, bias, act)
    if mode == "w8a16" and int8pack_fits(x, w):  # one extern op, nothing to fuse, and inductor (torch 2.13,
        return fn(x, w, w_scale, bias, act)  # CPU) cannot lower it: compiled, the whole kernel fell back
    key = _key(mode, x, w, bias, act)
    compiled = _compiled(key)
    if compiled is None:
        return fn(x, w, w_scale, bias, act)
    torch._dynamo.maybe_mark_dynamic(x, 0)
    try:
        return compiled(x, w, w_scale, bias, act)
    except Exception as exc:  # a missing compiler or an inductor bug must not break inference
        out = fn(x, w, w_scale, bias, act)  # eager fails too: the caller's error surfaces, the kernel stays
        _COMPILED[key] = None  # this kernel only: others (other shapes, other models) keep compiling
        logger.warning("torch.compile of the int8 kernel %s failed (%s: %s); running it eagerly", key,
                       type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
        return out
