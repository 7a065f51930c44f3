"""How much each transformer block changes the residual stream, and which blocks to drop.

Scores are taken with forward hooks on the block list (not ``output_hidden_states``, whose last entry is
taken after the final norm), averaged over valid tokens (``attention_mask == 1``) of every batch:

* ``block_influence`` (ShortGPT, Men et al. 2024): ``1 - cos(x_in, x_out)`` of block ``l``.
* ``angular`` (Gromov et al. 2024): ``arccos(cos(x_l, x_{l+n})) / pi`` between the input of block ``l`` and
  the input of block ``l + n`` (the output of the last block for the end of the stack), for blocks of ``n``
  layers. Gromov et al. use the last token only; here every valid token counts.

Higher means more important; :func:`select_layers` picks the least important layers or block.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...arch import get_layers
from ...core.calibration import to_device
from ...core.modules import eval_mode, model_device
from ...errors import SurgeryError
from .config import METHODS

__all__ = ["METHODS", "layer_importance", "select_layers"]

logger = logging.getLogger(__name__)


def _angular(cos: torch.Tensor) -> torch.Tensor:
    return torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi


def _hidden(args: tuple, kwargs: dict, output) -> tuple[torch.Tensor, torch.Tensor]:
    # the block's first argument is the residual stream, passed positionally or by keyword
    x_in = args[0] if args else kwargs.get("hidden_states", next(iter(kwargs.values()), None))
    x_out = output[0] if isinstance(output, (tuple, list)) else output
    return x_in, x_out


@torch.no_grad()
def layer_importance(
    model: nn.Module, batches: Iterable[dict], method: str = "block_influence", n: int = 1
) -> list[float]:
    """One score per block of ``n`` consecutive layers (``num_layers - n + 1`` floats; ``n=1``: per layer).

    ``batches``: dicts of model inputs (``input_ids``, ``attention_mask``, ...); padding is excluded via
    ``attention_mask``. The model runs in eval mode under ``no_grad``; its training flag is restored.
    """
    if method not in METHODS:
        raise SurgeryError(f"`method` must be one of {METHODS}, got {method!r}")
    layers = get_layers(model)
    total = len(layers)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < total:
        raise SurgeryError(
            f"`n` (block size) must be an int in [1, {total - 1}] for a {total}-layer model, got {n!r}"
        )
    inputs: list[torch.Tensor | None] = [None] * (total + 1)  # x_l for l = 0..total (x_total: last output)

    def make_hook(i: int):
        def hook(module, args, kwargs, output):
            x_in, x_out = _hidden(args, kwargs, output)
            inputs[i] = x_in.detach()
            if i == total - 1:
                inputs[total] = x_out.detach()

        return hook

    handles = [layer.register_forward_hook(make_hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    sums = torch.zeros(total - n + 1, dtype=torch.float64)
    count = 0
    device = model_device(model)
    try:
        with eval_mode(model):
            for batch in tqdm(batches, desc=f"layer importance ({method})", leave=False):
                batch = to_device(batch, device)
                model(**batch)
                mask = batch.get("attention_mask")
                if mask is None:
                    mask = torch.ones(inputs[0].shape[:2], dtype=torch.bool, device=inputs[0].device)
                valid = mask.bool()  # (B, T)
                for start in range(total - n + 1):
                    x, y = inputs[start].double(), inputs[start + n].double()  # (B, T, H)
                    cos = F.cosine_similarity(x, y, dim=-1)  # (B, T)
                    per_token = 1.0 - cos if method == "block_influence" else _angular(cos)
                    sums[start] += per_token[valid].sum().cpu()
                count += int(valid.sum())
                inputs[:] = [None] * (total + 1)
    finally:
        for handle in handles:
            handle.remove()
    if count == 0:
        raise SurgeryError("`batches` held no valid tokens (empty, or every attention_mask entry is 0)")
    scores = (sums / count).tolist()
    logger.info("%s scores: %s", method, [round(s, 4) for s in scores])
    return scores


def select_layers(scores, n: int, contiguous: bool = False, *, block: int = 1) -> list[int]:
    """The ``n`` layers to drop: the ``n`` lowest-scoring layers, or with ``contiguous=True`` the block of
    ``n`` consecutive layers with the lowest total score. Returns sorted layer indices.

    ``block`` is the block size the scores were computed with (``layer_importance(..., n=block)``): with
    ``block == n`` (and ``contiguous=True``) ``scores[l]`` already scores layers ``l..l+n-1``.
    """
    values = [float(s) for s in scores]
    if not values or any(math.isnan(s) for s in values):
        raise SurgeryError(f"`scores` must be a non-empty list of numbers without NaN, got {values!r}")
    if block != 1 and not (contiguous and block == n):
        raise SurgeryError(
            f"`block` must be 1 (per-layer scores) or equal to n={n} with contiguous=True, "
            f"got block={block!r}, contiguous={contiguous!r}"
        )
    total = len(values) + block - 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < total:
        raise SurgeryError(
            f"`n` must be an int in [1, {total - 1}] (at least one of {total} layers must remain), got {n!r}"
        )
    if not contiguous:
        order = sorted(range(len(values)), key=lambda i: (values[i], i))
        return sorted(order[:n])
    windows = values if block == n else [sum(values[s : s + n]) for s in range(total - n + 1)]
    start = min(range(len(windows)), key=lambda s: (windows[s], s))
    return list(range(start, start + n))
