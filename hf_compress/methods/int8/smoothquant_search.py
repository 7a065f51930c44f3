"""Per-group SmoothQuant strength search (AWQ-style grid), as pure functions on tensors.

For one smoothing group (the linears ``W_i`` reading the same input ``X``), a candidate factor ``s`` is scored
by the W8A8 output error it leaves:

    err(s) = sum_i || w8a8(X / s, quant(W_i * s)) - X W_i^T ||^2

computed with the very kernels the quantized model runs (:func:`int8_kernels.w8a8_linear`: per-token
int8 activations, int32 products; :func:`int8_format.quantize_per_channel`: the weights' rounding). The
candidates are SmoothQuant's ``s(alpha)`` for each alpha of a grid, plus ``s = 1`` (no smoothing).
"""

from __future__ import annotations

import torch

from ...core.calibration import sample_rows
from .format import quantize_per_channel
from .kernels import w8a8_linear

__all__ = ["ALPHA_GRID", "w8a8_error", "search_alpha", "TokenSampler"]

#: the alphas tried by ``smoothquant="auto"`` (None stands for no smoothing, s = 1)
ALPHA_GRID: tuple[float | None, ...] = (None,) + tuple(round(0.05 * i, 2) for i in range(20))


@torch.no_grad()
def w8a8_error(x: torch.Tensor, weights: list[torch.Tensor], s: torch.Tensor, refs=None) -> float:
    """x (n, in), weights [(out_i, in)], s (in,) -> sum_i ||w8a8(x / s, W_i * s) - x W_i^T||^2.

    ``refs`` (the float outputs ``x W_i^T``) may be passed to avoid recomputing them per candidate.
    """
    xs = x / s  # (n, in)
    total = 0.0
    for i, w in enumerate(weights):
        q, scale = quantize_per_channel(w.float() * s)  # (out, in) int8, (out, 1)
        ref = refs[i] if refs is not None else x @ w.float().t()  # (n, out)
        total += float((w8a8_linear(xs, q, scale, None) - ref).pow(2).sum())
    return total


@torch.no_grad()
def search_alpha(
    x: torch.Tensor, act_absmax: torch.Tensor, weights: list[torch.Tensor], factors, grid=ALPHA_GRID
) -> tuple[float | None, torch.Tensor, dict]:
    """Pick the grid alpha with the least :func:`w8a8_error` on ``x`` (n, in).

    ``factors(act_absmax, weights, alpha)`` gives the candidate s (in,) of one alpha (SmoothQuant's rule);
    alpha None means s = 1. Returns (alpha, s, {alpha: error}); ties go to the earlier grid entry.
    """
    x = x.float()
    refs = [x @ w.float().t() for w in weights]
    errors, best = {}, None
    for alpha in grid:
        s = torch.ones(x.shape[1], device=x.device) if alpha is None else factors(act_absmax, weights, alpha)
        errors[alpha] = w8a8_error(x, weights, s, refs)
        if best is None or errors[alpha] < best[0]:
            best = (errors[alpha], alpha, s)
    return best[1], best[2], errors


class TokenSampler:
    """Running per-channel absmax over every token, plus a seeded random subset of at most ``cap`` tokens
    (``per_batch`` from each batch) kept for the search, so memory stays bounded."""

    def __init__(self, per_batch: int | None, seed: int = 0):
        self.per_batch = per_batch  # None: absmax only
        self.absmax: torch.Tensor | None = None
        self.samples: list[torch.Tensor] = []
        self.generator = torch.Generator().manual_seed(seed)

    def add(self, x: torch.Tensor) -> None:  # x (n, in)
        cur = x.abs().amax(dim=0)
        self.absmax = cur if self.absmax is None else torch.maximum(self.absmax, cur)
        if self.per_batch:
            self.samples.append(sample_rows(x, self.per_batch, self.generator).clone())

    def tokens(self) -> torch.Tensor:
        """(n, in): the kept tokens."""
        return torch.cat(self.samples)
