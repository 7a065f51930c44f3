"""Keeping pruned weights at exactly zero through training, and making the masks permanent for saving.

A pruned module carries its mask as a **non-persistent** bool buffer ``sparsity_mask`` (same layout as its
weight, so a GPT-2 ``Conv1D`` mask is ``[in, out]`` like its weight). Non-persistent means it moves with
``model.to(device)`` but never enters ``state_dict()``: a checkpoint is a stock dense one with zeros, with
no ``weight_orig`` / ``weight_mask`` leftovers for stock transformers to silently re-initialise.

Four guards, none of which needs a change to a trainer:

1. **gradient mask** (a tensor hook on the weight): pruned entries get exactly zero gradient, so AdamW's
   moments for them stay zero and its update ``lr * m / (sqrt(v) + eps)`` and decoupled weight decay
   ``w * (1 - lr * wd)`` both leave a zero at zero; it also keeps gradient clipping blind to pruned entries.
2. **after every optimizer step** (a global ``torch.optim`` post-step hook, active only for parameters
   registered here): the mask is re-applied, which covers optimizers or stale optimizer state (momentum
   from before pruning) that would move a zero.
3. **before every forward** (a module pre-hook): re-applies the mask if the weight changed in place since
   the last application (checked by the tensor version counter, O(1)), and re-attaches the gradient hook
   on a deep-copied model (``copy.deepcopy`` drops tensor hooks).
4. **before every ``state_dict()``** (so ``save_pretrained`` included): the mask is re-applied.

:func:`make_permanent` applies the masks one last time and removes all of this.
"""

from __future__ import annotations

import functools
import weakref

import torch
import torch.nn as nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["MASK_BUFFER", "attach_mask", "apply_mask", "make_permanent", "masked_modules", "get_mask"]

MASK_BUFFER = "sparsity_mask"

# weight Parameter -> (weakref to its module, grad-hook handle, version after the last mask application)
_REGISTRY: WeakIdKeyDictionary = WeakIdKeyDictionary()
_STEP_HOOK = None


def get_mask(module: nn.Module) -> torch.Tensor | None:
    """The bool keep-mask of a pruned module (``True`` = kept), or ``None``."""
    return module._buffers.get(MASK_BUFFER)


def masked_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every module of ``model`` that carries a sparsity mask, by qualified name."""
    return {name: m for name, m in model.named_modules() if get_mask(m) is not None}


@torch.no_grad()
def apply_mask(module: nn.Module) -> None:
    """Zero the pruned entries of ``module.weight`` in place and remember the weight's version."""
    weight = module.weight
    weight.masked_fill_(~get_mask(module), 0)
    entry = _REGISTRY.get(weight)
    if entry is not None:
        entry[2] = weight._version


def _mask_grad(module_ref, grad: torch.Tensor) -> torch.Tensor:
    module = module_ref()
    mask = None if module is None else get_mask(module)
    return grad if mask is None else grad.masked_fill(~mask, 0)


def _after_optimizer_step(optimizer, args, kwargs) -> None:
    if not _REGISTRY:
        return
    for group in optimizer.param_groups:
        for param in group["params"]:
            entry = _REGISTRY.get(param)
            module = entry[0]() if entry is not None else None
            if module is not None and get_mask(module) is not None:
                apply_mask(module)


def _ensure_hooks(module: nn.Module) -> None:
    """Register the gradient hook of ``module.weight`` (once per Parameter object) and the step hook."""
    global _STEP_HOOK
    weight = module.weight
    entry = _REGISTRY.get(weight)
    if entry is None:
        entry = _REGISTRY[weight] = [weakref.ref(module), None, -1]
    if entry[1] is None and weight.requires_grad:  # (re-)attach after unfreezing
        entry[1] = weight.register_hook(functools.partial(_mask_grad, weakref.ref(module)))
    if _STEP_HOOK is None:
        _STEP_HOOK = register_optimizer_step_post_hook(_after_optimizer_step)


def _forward_pre_hook(module: nn.Module, args) -> None:
    if get_mask(module) is None:
        return
    _ensure_hooks(module)
    if _REGISTRY[module.weight][2] != module.weight._version:
        apply_mask(module)


def _state_dict_pre_hook(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    if get_mask(module) is not None:
        apply_mask(module)


def attach_mask(module: nn.Module, keep: torch.Tensor) -> None:
    """Prune ``module.weight`` to the bool keep-mask ``keep`` (weight layout) and keep it pruned.

    A module that already has a mask keeps the intersection: pruning never revives a pruned weight.
    """
    keep = keep.to(device=module.weight.device, dtype=torch.bool)
    old = get_mask(module)
    if old is not None:
        keep = keep & old
    else:
        module.register_forward_pre_hook(_forward_pre_hook)
        module.register_state_dict_pre_hook(_state_dict_pre_hook)
    module.register_buffer(MASK_BUFFER, keep, persistent=False)
    _ensure_hooks(module)
    apply_mask(module)


def _remove_hooks(hooks: dict, fn) -> None:
    for key, hook in list(hooks.items()):
        if hook is fn:
            del hooks[key]


def make_permanent(model: nn.Module) -> int:
    """Apply every mask one last time and remove masks and hooks; returns how many modules were unmasked.

    Afterwards the model is a plain dense model whose pruned weights are zero (and no longer protected:
    further training will move them). ``save_pretrained`` does not need this: it already writes zeros.
    """
    modules = masked_modules(model)
    for module in modules.values():
        apply_mask(module)
        entry = _REGISTRY.pop(module.weight, None)
        if entry is not None and entry[1] is not None:
            entry[1].remove()
        _remove_hooks(module._forward_pre_hooks, _forward_pre_hook)
        _remove_hooks(module._state_dict_pre_hooks, _state_dict_pre_hook)
        delattr(module, MASK_BUFFER)
    return len(modules)
