"""Input-activation norms for Wanda pruning (Sun et al. 2023, "A Simple and Effective Pruning Approach for
Large Language Models").

Wanda scores weight ``W[i, j]`` by ``|W[i, j]| * ||X_j||_2`` where ``X_j`` is input feature ``j`` of the
layer over every (non-padding) calibration token. This module only collects the norms; the scoring and
masking live in :mod:`.sparsity`. Two ways to collect:

* :func:`sequential_norms` (the paper's way, the default): blocks are processed in order; block ``i``'s
  norms come from the outputs of blocks ``0..i-1`` **after** those were pruned, so later layers see the
  activations they will see at inference. Cost: one forward of the model up to the last block to capture
  each block's inputs, then two forwards of each block (collect, then re-run the pruned block).
* :func:`one_pass_norms`: one forward of the dense model with hooks on every target (needed for
  ``scope="global"``, which must score every layer before pruning any).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ...arch import get_arch
from ...errors import SurgeryError

__all__ = ["prepare_batches", "one_pass_norms", "sequential_norms"]

logger = logging.getLogger(__name__)

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")


def prepare_batches(calibration, model: nn.Module) -> list[dict]:
    """Calibration batches as a list of dicts of tensors on the model's device (labels and extras dropped)."""
    if calibration is None:
        raise SurgeryError(
            "method='wanda' needs calibration batches, got calibration=None; pass e.g. "
            "calibration=[tokenizer(texts, return_tensors='pt', padding=True)] (a few hundred tokens suffice)"
        )
    if isinstance(calibration, dict) or not isinstance(calibration, Iterable):
        calibration = [calibration]
    device = next(model.parameters()).device
    batches = []
    for i, batch in enumerate(calibration):
        if not hasattr(batch, "keys") or not ("input_ids" in batch or "inputs_embeds" in batch):
            raise SurgeryError(f"calibration batch {i} must be a dict with 'input_ids', "
                               f"got {type(batch).__name__}")
        batches.append({k: batch[k].to(device) for k in _MODEL_INPUTS if batch.get(k) is not None})
    if not batches:
        raise SurgeryError("calibration is empty; pass at least one batch of tokenized text")
    return batches


def _token_mask(batch: dict) -> torch.Tensor | None:
    mask = batch.get("attention_mask")
    return None if mask is None else mask.reshape(-1).bool()  # (B*T,)


def _call_kwargs(model: nn.Module) -> dict:
    return {"use_cache": False} if get_arch(model).causal else {}  # no KV cache in calibration passes


class _NormCollector:
    """Forward hooks that sum ``x_j ** 2`` over the real tokens entering each module (float64)."""

    def __init__(self, modules: dict[str, nn.Module]):
        self.sums: dict[str, torch.Tensor] = {}
        self.token_mask: torch.Tensor | None = None
        self._handles = [m.register_forward_hook(functools.partial(self._hook, name))
                         for name, m in modules.items()]

    def _hook(self, name: str, module: nn.Module, args, output) -> None:
        x = args[0].detach()
        x = x.reshape(-1, x.shape[-1])  # (tokens, in)
        if self.token_mask is not None and self.token_mask.numel() == x.shape[0]:
            x = x[self.token_mask]
        sq = x.double().pow(2).sum(0)  # (in,)
        self.sums[name] = self.sums[name] + sq if name in self.sums else sq

    def norms(self) -> dict[str, torch.Tensor]:
        return {name: s.sqrt().float() for name, s in self.sums.items()}

    def close(self) -> None:
        for h in self._handles:
            h.remove()


@contextlib.contextmanager
def _eval_no_grad(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def one_pass_norms(model: nn.Module, modules: dict[str, nn.Module],
                   batches: list[dict]) -> dict[str, torch.Tensor]:
    """``||X_j||_2`` per input feature of each module, from one forward of the (dense) model per batch."""
    collector = _NormCollector(modules)
    try:
        with _eval_no_grad(model):
            for batch in tqdm(batches, desc="wanda calibration", leave=False):
                collector.token_mask = _token_mask(batch)
                model(**batch, **_call_kwargs(model))
    finally:
        collector.close()
    return collector.norms()


class _Stop(Exception):
    pass


def _capture_inputs(model: nn.Module, layers: nn.ModuleList, batches: list[dict]):
    """Run the model up to its last block; returns (block-0 inputs per batch, per-block call records)."""
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
                model(**batch, **_call_kwargs(model))
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    if len(first_hidden) != len(batches) or any(r is None for r in records[-1]):
        raise SurgeryError(f"{type(model).__name__} did not call all its blocks in order; "
                           f"use sequential=False")
    return first_hidden, records


def _run_block(layer: nn.Module, hidden: torch.Tensor, record) -> torch.Tensor:
    rest, kwargs, positional = record
    out = layer(hidden, *rest, **kwargs) if positional else layer(*rest, hidden_states=hidden, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


def sequential_norms(model: nn.Module, layers: nn.ModuleList, layer_targets: list[dict[str, nn.Module]],
                     batches: list[dict], prune: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Block by block: collect the norms of block ``i``'s targets from the pruned blocks' outputs, call
    ``prune(norms)`` (which must prune block ``i``), then re-run the pruned block to feed block ``i + 1``."""
    with _eval_no_grad(model):
        hidden, records = _capture_inputs(model, layers, batches)
        token_masks = [_token_mask(b) for b in batches]
        for i, layer in enumerate(tqdm(layers, desc="wanda (sequential)", leave=False)):
            if layer_targets[i]:
                collector = _NormCollector(layer_targets[i])
                try:
                    for b in range(len(batches)):
                        collector.token_mask = token_masks[b]
                        _run_block(layer, hidden[b], records[i][b])
                finally:
                    collector.close()
                prune(collector.norms())
            if i < len(layers) - 1:
                hidden = [_run_block(layer, hidden[b], records[i][b]) for b in range(len(batches))]
