"""Compile a quantized model's transformer blocks so the int8 kernels fuse with what surrounds them.

Eager W8A8 pays for separate passes around every ``torch._int_mm``: quantize the activation, rescale the
int32 result, add the bias, then (outside the linear) the residual add, the LayerNorm, the activation.
``torch.compile`` over whole blocks lets inductor fuse those passes across module boundaries, e.g. one
kernel for rescale + bias + residual + LayerNorm + the next layer's per-token quantization. Compiling
single kernels (``Int8Linear.use_compile``) cannot fuse past the linear.

What is compiled: when the block list lives in a sub-module of the base model that only loops over the
blocks (BERT's ``encoder``, DistilBERT's ``transformer``), that module, so fusions also cross block
boundaries; otherwise (decoders, whose base model also builds masks and the KV cache) each block.
``nn.Module.compile`` is used, so parameter names, ``state_dict`` and ``save_pretrained`` are unchanged.
A failure to compile (no C compiler, an inductor bug) logs a warning once and runs that module eagerly;
an error of the caller's input is raised and leaves the module compiled.

    >>> quantize_int8(model, mode="w8a8", compile=True)       # or, for a loaded checkpoint:
    >>> compile_int8(model)
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ...arch import get_arch, get_layers, layers_parent
from .kernels import with_own_code

__all__ = ["compile_int8", "is_compiled", "uncompile_int8"]

logger = logging.getLogger(__name__)

_COMPILE_ERRORS: tuple[type[BaseException], ...] = (torch._dynamo.exc.TorchDynamoException,)
try:  # newer torch raises inductor failures outside the dynamo hierarchy
    from torch._inductor.exc import InductorError

    _COMPILE_ERRORS += (InductorError,)
except ImportError:  # pragma: no cover - older torch
    pass


def _compile_targets(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) to compile: the blocks' parent when it is not the base model, else each block."""
    parent_path, parent = layers_parent(model)
    if parent_path:
        return [(parent_path, parent)]
    return [(f"{get_arch(model).layers}.{i}", block) for i, block in enumerate(get_layers(model))]


# Inductor inlines a pointwise chain into every consumer unless it has more than this many ops. Its default
# (30) makes the per-token quantization after an MLP activation compute GELU's erf twice: once for the row
# absmax, once for the rounding. At 8 the activation is written once and read twice: W8A8 MiniLM at 8x128
# went from 2.59x to 2.77x fp32 (one thread, medians of 10, side by side).
_INDUCTOR_OPTIONS = {"realize_opcount_threshold": 8}


def _options() -> dict:
    import torch._inductor.config as inductor_config

    return {k: v for k, v in _INDUCTOR_OPTIONS.items() if hasattr(inductor_config, k)}


def _own_entry(module: nn.Module, name: str):
    """A function calling ``module`` with a code object of its own: blocks sharing ``_call_impl`` would share
    dynamo's recompile budget, and with a KV cache each block needs its own variants (they guard on
    ``layer_idx``): past the 8th block of SmolLM2's 30 the rest silently ran eagerly."""

    def entry(*args, **kwargs):
        return module._call_impl(*args, **kwargs)

    return with_own_code(entry, f"hf_compress_compiled_{name.replace('.', '_') or 'model'}")


def _guarded(module: nn.Module, name: str, dynamic: bool):
    """``module``'s compiled call. A call that fails compiled is retried eagerly: when the eager call fails
    too, the input was bad (dynamo wraps the caller's errors in its own types, so the type cannot tell) and
    the eager error is raised, the module staying compiled; when it succeeds, the compiler failed: one
    warning, and eager calls from then on."""
    compiled = torch.compile(_own_entry(module, name), dynamic=dynamic, options=_options())
    state = {"succeeded": False}

    def call(*args, **kwargs):
        try:
            out = compiled(*args, **kwargs)
        except Exception as exc:
            if state["succeeded"] and not isinstance(exc, _COMPILE_ERRORS):
                raise  # the compiled module ran before: this is the caller's error, not the compiler's
            out = module._call_impl(*args, **kwargs)  # raises the caller's error; the module stays compiled
            logger.warning("torch.compile of %s failed (%s: %s); running it eagerly", name or "model",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
            module._compiled_call_impl = None
            return out
        state["succeeded"] = True
        return out

    call.hf_compress_compiled = True
    return call


def compile_int8(model: nn.Module, dynamic: bool = True) -> list[str]:
    """Compile ``model``'s transformer blocks in place (see the module docstring); returns what was
    compiled. ``dynamic=True`` keeps batch size and sequence length symbolic (one compile serves all)."""
    targets = _compile_targets(model)
    for name, module in targets:
        module._compiled_call_impl = _guarded(module, name, dynamic)
    logger.info("compiled %d module(s) with torch.compile: %s", len(targets), [n for n, _ in targets][:3])
    return [n for n, _ in targets]


def is_compiled(model: nn.Module) -> bool:
    """True when :func:`compile_int8` compiled some module of ``model`` (and it has not fallen back)."""
    return any(getattr(m._compiled_call_impl, "hf_compress_compiled", False)
               for m in model.modules() if getattr(m, "_compiled_call_impl", None) is not None)


def uncompile_int8(model: nn.Module) -> None:
    """Undo :func:`compile_int8`: every module runs eagerly again."""
    for m in model.modules():
        if getattr(getattr(m, "_compiled_call_impl", None), "hf_compress_compiled", False):
            m._compiled_call_impl = None
