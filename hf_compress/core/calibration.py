"""Calibration passes every method shares: batches on the model's device, input hooks that drop padding,
and block-by-block capture (run a model up to its blocks, then each block on its own).

    >>> batches = prepare_batches(calibration, model)              # dicts of model inputs, on its device
    >>> run_with_input_hooks(model, modules, batches, on_input)     # on_input(name, x (tokens, in), source)
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import get_arch, is_supported
from ..errors import HfCompressError
from .modules import eval_mode, model_device

__all__ = ["MODEL_INPUTS", "InputHooks", "call_kwargs", "capture_block_inputs", "prepare_batches",
           "run_block", "run_with_input_hooks", "sample_rows", "to_device"]

#: the keys of a calibration batch handed to the model (labels and tokenizer extras are dropped)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


def to_device(batch: dict, device) -> dict:
    """``batch`` with every tensor moved to ``device`` (other values as they are)."""
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def prepare_batches(calibration, model: nn.Module, error: type[Exception] = HfCompressError) -> list[dict]:
    """Calibration (one batch or an iterable of them) as a list of dicts of model inputs on ``model``'s
    device; raises ``error`` for a batch without ``input_ids`` / ``inputs_embeds`` or for no batch."""
    if isinstance(calibration, dict) or not isinstance(calibration, Iterable):
        calibration = [calibration]
    device = model_device(model)
    batches = []
    for i, batch in enumerate(calibration):
        if not hasattr(batch, "keys") or not ("input_ids" in batch or "inputs_embeds" in batch):
            raise error(f"calibration batch {i} must be a dict of model inputs with 'input_ids', "
                        f"got {type(batch).__name__}")
        batches.append(to_device({k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}, device))
    if not batches:
        raise error("calibration is empty; pass at least one batch of tokenized text")
    return batches


def call_kwargs(model: nn.Module) -> dict:
    """Extra forward keywords of a calibration pass: no KV cache for causal families."""
    return {"use_cache": False} if is_supported(model) and get_arch(model).causal else {}


class InputHooks:
    """Forward pre-hooks calling ``on_input(name, x, source)`` for each module's input: ``x`` is it flattened
    to (tokens, in_features) with padding tokens (``mask == 0``) dropped, detached, in its own dtype;
    ``source`` is the input tensor itself (siblings such as q/k/v receive the very same object). Set
    ``mask`` to the batch's ``attention_mask`` before each forward; ``reached`` names the modules called."""

    def __init__(self, modules: dict[str, nn.Module], on_input):
        self.on_input, self.mask, self.reached = on_input, None, set()
        self._handles = [m.register_forward_pre_hook(functools.partial(self._hook, n)) for n, m in modules.items()]

    def _hook(self, name: str, _module, args) -> None:
        self.reached.add(name)
        x = args[0].detach()
        x2d = x.reshape(-1, x.shape[-1])  # (B*T, in)
        if self.mask is not None and self.mask.numel() == x2d.shape[0]:
            x2d = x2d[self.mask.reshape(-1).to(x2d.device).bool()]  # (tokens, in)
        self.on_input(name, x2d, args[0])

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "InputHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run_with_input_hooks(model: nn.Module, modules: dict[str, nn.Module], batches, on_input,
                         error: type[Exception] = HfCompressError, desc: str = "calibration") -> None:
    """Run ``model`` (eval mode, no grad, mode restored after) on each batch, moved to its device, with
    :class:`InputHooks` on ``modules``. A module the batches never reach is an error (its statistics would
    be missing)."""
    batches = prepare_batches(batches, model, error)
    with eval_mode(model), InputHooks(modules, on_input) as hooks:
        for batch in tqdm(batches, desc=desc, leave=False):
            hooks.mask = batch.get("attention_mask")
            model(**batch, **call_kwargs(model))
    missing = [n for n in modules if n not in hooks.reached]
    if missing:
        raise error(f"calibration never reached layers {missing[:5]}; pass batches the model uses")


class _Stop(Exception):
    pass


def capture_block_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[dict],
                         error: type[Exception] = HfCompressError):
    """Run ``model`` on each batch up to its last block (which is not run); returns (the hidden states
    entering block 0 per batch, ``records[block][batch]``: the other arguments of each block call) for
    :func:`run_block`. Call it under :func:`~hf_compress.core.modules.eval_mode`."""
    records: list[list] = [[None] * len(batches) for _ in layers]
    first_hidden: list[torch.Tensor] = []
    current = [0]

    def pre_hook(idx, module, args, kwargs):
        kwargs = dict(kwargs)
        if args:
            hidden, rest, positional = args[0], tuple(args[1:]), True
        else:
            hidden, rest, positional = kwargs.pop("hidden_states"), (), False
        records[idx][current[0]] = (rest, kwargs, positional)
        if idx == 0:
            first_hidden.append(hidden.detach())
        if idx == len(layers) - 1:
            raise _Stop

    handles = [layer.register_forward_pre_hook(functools.partial(pre_hook, i), with_kwargs=True)
               for i, layer in enumerate(layers)]
    try:
        for b, batch in enumerate(batches):
            current[0] = b
            try:
                model(**batch, **call_kwargs(model))
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    if len(first_hidden) != len(batches) or any(r is None for r in records[-1]):
        raise error(f"{type(model).__name__} did not call all its blocks in order, which block-by-block "
                    f"calibration needs; use sequential=False")
    return first_hidden, records


def run_block(layer: nn.Module, hidden: torch.Tensor, record) -> torch.Tensor:
    """One block on ``hidden`` with the other arguments recorded by :func:`capture_block_inputs`."""
    rest, kwargs, positional = record
    out = layer(hidden, *rest, **kwargs) if positional else layer(*rest, hidden_states=hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def sample_rows(x: torch.Tensor, cap: int | None, generator: torch.Generator) -> torch.Tensor:
    """``x`` (n, ...) itself when it has at most ``cap`` rows (or ``cap`` is None), else a random subset of
    ``cap`` rows drawn from ``generator``: one draw per call, so a seeded caller's choice is reproducible."""
    if cap is None or x.shape[0] <= cap:
        return x
    return x[torch.randperm(x.shape[0], generator=generator)[:cap].to(x.device)]
