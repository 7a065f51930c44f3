"""Pure tensor kernels behind :class:`hf_compress.methods.int8.quantize.Int8Linear`.

``w8a8``: per-token symmetric int8 activations (absmax / 127), ``torch._int_mm`` with the int8 weight kept
``[out, in]`` contiguous and passed as ``w.t()`` (the fast CPU layout), then one rescale by
``x_scale * w_scale``. Which int8 matmul runs on a CPU is decided here, once per process
(:func:`w8a8_kernel`): ``torch._int_mm`` where the CPU has VNNI / AMX int8 (fast there) or is not x86;
fbgemm's dynamic quantized linear (:mod:`.fbgemm`, 7-bit activations) on x86 CPUs without them, where
``_int_mm`` is a scalar loop. ``HF_COMPRESS_W8A8_KERNEL=int_mm|fbgemm`` overrides the choice. ``w8a16``: 16-bit activations times the int8 weight; on CPU
``aten._weight_int8pack_mm`` for a few rows (fast there), else a bf16/fp16 product with the weight
converted for that call (O(out·in) next to the O(rows·out·in) product). Optionally everything runs through
``torch.compile`` so the quantize and rescale passes fuse around the matmul; a compile failure makes that one
kernel (mode, shape, dtype, device) run eagerly from then on, with one warning; other kernels and other
models keep compiling.
"""

from __future__ import annotations

import functools
import logging
import os
import types

import torch
import torch.nn.functional as F

from ...core.modules import native_bf16_cpu
from ...errors import QuantizationError
from .fbgemm import fbgemm_available, fbgemm_mm

__all__ = ["int8_linear", "w8a8_linear", "w8a16_linear", "quantize_tokens", "with_own_code", "kernel_status",
           "SMALL_M", "int8pack_fits", "w8a8_kernel", "set_w8a8_kernel", "W8A8_KERNELS"]

logger = logging.getLogger(__name__)

SMALL_M = 8  # rows up to which the CPU w8a16 path uses aten._weight_int8pack_mm (measured fast at M=1)
PACK_K = 16  # aten._weight_int8pack_mm reads K in blocks: other widths segfault or return garbage (CPU)
_HALF = (torch.bfloat16, torch.float16)


def quantize_tokens(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8: x (M, K) float -> (xq int8 (M, K), scale float32 (M, 1))."""
    xf = x.float()
    scale = xf.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # (M, 1)
    return torch.round(xf / scale).to(torch.int8), scale


W8A8_KERNELS = ("int_mm", "fbgemm")
_ENV = "HF_COMPRESS_W8A8_KERNEL"
_INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8")  # CPU features with a non-saturating int8 dot product


def _detect_cpu_kernel() -> str:
    """``int_mm`` on CPUs with an int8 dot-product instruction or off x86, else ``fbgemm`` when built in."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if caps.get("architecture", "x86_64") != "x86_64" or any(caps.get(k) for k in _INT8_DOT):
        return "int_mm"
    return "fbgemm" if caps.get("avx2") and fbgemm_available() else "int_mm"


def _checked(name: str, where: str) -> str:
    if name == "auto":
        return _detect_cpu_kernel()
    if name not in W8A8_KERNELS:
        raise QuantizationError(f"{where} must be one of {list(W8A8_KERNELS)} or 'auto', got {name!r}")
    if name == "fbgemm" and not fbgemm_available():
        raise QuantizationError(f"{where} is 'fbgemm' but this torch has no fbgemm engine; use 'int_mm'")
    return name


def set_w8a8_kernel(name: str | None = "auto") -> str:
    """Choose the CPU W8A8 matmul for this process: ``"int_mm"``, ``"fbgemm"`` or ``"auto"`` (by CPU);
    ``None`` re-reads ``HF_COMPRESS_W8A8_KERNEL``. Returns the kernel now in use."""
    global _CPU_KERNEL
    if name is None:
        _CPU_KERNEL = _checked(os.environ.get(_ENV, "auto"), f"`{_ENV}`")
    else:
        _CPU_KERNEL = _checked(name, "`set_w8a8_kernel(name)`")
    return _CPU_KERNEL


_CPU_KERNEL = "int_mm"
set_w8a8_kernel(None)  # decided once per process, at import (a module global: torch.compile guards on it)


def w8a8_kernel(device: str = "cpu") -> str:
    """The int8 matmul W8A8 layers use on ``device`` (``"int_mm"`` on every non-CPU device)."""
    return _CPU_KERNEL if device == "cpu" else "int_mm"


def _fbgemm_w8a8(x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias) -> torch.Tensor:
    """Per-token W8A8 through fbgemm (see :mod:`.fbgemm`): each row's [min, max] mapped onto [-1, 1], one pin
    row [1, -1, 0, ...] so that fbgemm's per-tensor range is exactly [-1, 1] for every batch."""
    xf = x.float()
    m, k = xf.shape
    lo, hi = torch.aminmax(xf, dim=1, keepdim=True)  # (M, 1) each
    half = ((hi - lo) * 0.5).clamp_min(1e-12)
    mid = (hi + lo) * 0.5
    if torch.compiler.is_compiling() or (torch.is_grad_enabled() and xf.requires_grad):
        pin = torch.zeros(1, k, dtype=torch.float32, device=xf.device)
        pin[0, 0], pin[0, -1] = 1.0, -1.0
        rows = torch.cat([torch.addcmul(-mid / half, xf, 1.0 / half).clamp(-1.0, 1.0), pin])  # autograd: no out=
    else:  # eager: one pass + clamp into the buffer, the pin row written in place
        rows = torch.empty(m + 1, k, dtype=torch.float32, device=xf.device)
        torch.addcmul(-mid / half, xf, 1.0 / half, out=rows[:m]).clamp_(-1.0, 1.0)
        rows[m].zero_()
        rows[m, 0], rows[m, -1] = 1.0, -1.0
    y = fbgemm_mm(rows, half, mid, w, w_scale)  # (M, N)
    return y if bias is None else y + bias.float()


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
    if _CPU_KERNEL == "fbgemm" and x.device.type == "cpu":
        return _activate(_fbgemm_w8a8(x, w, w_scale, bias).to(x.dtype), act)
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


@functools.lru_cache(maxsize=1)
def _emulated_bf16() -> bool:
    """True on CPUs without native bf16 (AVX2-only x86): there a dequantized bf16 matmul is ~4x slower than fp32
    (M=1024, K=384, N=1536: 146 ms vs 34 ms on an AVX2 EPYC), so the dense W8A16 path computes in fp32."""
    return not native_bf16_cpu()


def w8a16_linear(
    x: torch.Tensor, w: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None, act: str | None = None
):
    """x (M, K) float, w int8 (N, K), w_scale (N, 1) -> act(x w^T + b) (M, N) in x's dtype, 16-bit math (fp32
    for an fp32 input above SMALL_M rows on a CPU without native bf16)."""
    packed = int8pack_fits(x, w)
    if x.dtype in _HALF:
        cdtype = x.dtype
    elif x.device.type != "cpu":
        cdtype = torch.float16
    elif packed or x.dtype != torch.float32 or not _emulated_bf16():
        cdtype = torch.bfloat16  # the packed kernel is fast in bf16 even where bf16 is emulated (measured at M=4)
    else:
        cdtype = torch.float32  # dense product in fp32: ~4x faster than emulated bf16 on this kind of CPU
    xc = x.to(cdtype)
    if packed:
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
