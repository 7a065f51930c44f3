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

import logging
from collections.abc import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ...core.calibration import (InputHooks, capture_block_inputs, prepare_batches as _prepare, run_block,
                                 run_with_input_hooks)
from ...core.modules import eval_mode
from ...errors import SurgeryError

__all__ = ["prepare_batches", "one_pass_norms", "sequential_norms"]

logger = logging.getLogger(__name__)


def prepare_batches(calibration, model: nn.Module) -> list[dict]:
    """Calibration batches as a list of dicts of tensors on the model's device (labels and extras dropped)."""
    if calibration is None:
        raise SurgeryError(
            "method='wanda' needs calibration batches, got calibration=None; pass e.g. "
            "calibration=[tokenizer(texts, return_tensors='pt', padding=True)] (a few hundred tokens suffice)"
        )
    return _prepare(calibration, model, SurgeryError)


class _SquareSums:
    """``on_input`` summing ``x_j ** 2`` over the real tokens entering each module (float64)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, x: torch.Tensor, _source) -> None:  # x (tokens, in)
        sq = x.double().pow(2).sum(0)  # (in,)
        self.sums[name] = self.sums[name] + sq if name in self.sums else sq

    def norms(self) -> dict[str, torch.Tensor]:
        return {name: s.sqrt().float() for name, s in self.sums.items()}


def one_pass_norms(model: nn.Module, modules: dict[str, nn.Module],
                   batches: list[dict]) -> dict[str, torch.Tensor]:
    """``||X_j||_2`` per input feature of each module, from one forward of the (dense) model per batch."""
    sums = _SquareSums()
    run_with_input_hooks(model, modules, batches, sums, SurgeryError, desc="wanda calibration")
    return sums.norms()


def sequential_norms(model: nn.Module, layers: nn.ModuleList, layer_targets: list[dict[str, nn.Module]],
                     batches: list[dict], prune: Callable[[dict[str, torch.Tensor]], None]) -> None:
    """Block by block: collect the norms of block ``i``'s targets from the pruned blocks' outputs, call
    ``prune(norms)`` (which must prune block ``i``), then re-run the pruned block to feed block ``i + 1``."""
    with eval_mode(model):
        hidden, records = capture_block_inputs(model, layers, batches, SurgeryError)
        for i, layer in enumerate(tqdm(layers, desc="wanda (sequential)", leave=False)):
            if layer_targets[i]:
                sums = _SquareSums()
                with InputHooks(layer_targets[i], sums) as hooks:
                    for b, batch in enumerate(batches):
                        hooks.mask = batch.get("attention_mask")
                        run_block(layer, hidden[b], records[i][b])
                prune(sums.norms())
            if i < len(layers) - 1:
                hidden = [run_block(layer, hidden[b], records[i][b]) for b in range(len(batches))]
