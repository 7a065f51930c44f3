"""GPTQ rounding for symmetric per-channel int8 (Frantar et al., 2022), in the same on-disk format as RTN.

For one layer with weight W (out, in) and calibration inputs X (in, n), GPTQ picks int8 values Q that
reduce ||W X - (s * Q) X||^2: columns are quantized one at a time and each column's rounding error is
pushed onto the not-yet-quantized columns through the inverse Hessian H^-1, H = 2 X X^T / n (+ damping).
The per-channel scale s is the round-to-nearest one (row absmax / 127.5), so only the integers change.

All layers' Hessians are gathered in one pass over the calibration batches with the float model (the
"non-sequential" variant: cheaper than re-running each block on already-quantized inputs).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ...core.calibration import run_with_input_hooks
from ...core.modules import weight_out_in
from ...errors import QuantizationError
from .format import quantize_per_channel

__all__ = ["gptq_quantize_weight", "collect_hessians", "gptq_quantize_model"]

logger = logging.getLogger(__name__)


def collect_hessians(model: nn.Module, modules: dict[str, nn.Module], batches) -> dict[str, torch.Tensor]:
    """name -> H = 2 X X^T / n (in, in) float32 over all calibration tokens of that module's input."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    last: dict = {"source": None, "xtx": None}  # q/k/v (gate/up) read one tensor: one X^T X for all

    def on_input(name, x, source):  # x (n, in)
        x = x.float()
        if last["source"] is not source:
            last["source"], last["xtx"] = source, x.t() @ x  # (in, in); holding source keeps its id unique
        sums[name] = sums.get(name, 0) + last["xtx"]
        counts[name] = counts.get(name, 0) + x.shape[0]

    run_with_input_hooks(model, modules, batches, on_input, QuantizationError)
    last.clear()
    return {n: 2.0 * sums[n] / max(counts[n], 1) for n in sums}


@torch.no_grad()
def gptq_quantize_weight(
    weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01, block_size: int = 128
) -> tuple[torch.Tensor, torch.Tensor]:
    """weight (out, in) float, hessian (in, in) -> (q int8 (out, in), scale (out, 1) in weight's dtype)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small LAPACK calls and thousands of tiny ops: threads only add waiting
    try:  # (measured on a loaded 2-core machine: 12 s with 2 threads, 0.25 s with 1, for 1536 x 576)
        return _gptq(weight, hessian, damp, block_size)
    finally:
        torch.set_num_threads(threads)


def _gptq(weight: torch.Tensor, hessian: torch.Tensor, damp: float, block_size: int):
    _, scale = quantize_per_channel(weight)  # (out, 1), the RTN scale
    W = weight.detach().float().clone()  # (out, in)
    keep = (W != 0).float()  # (out, in): exact zeros are pruned weights (sparsify) and must stay zero
    H = hessian.detach().float().clone()  # (in, in)
    s = scale.float()
    n_cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(n_cols, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)  # upper factor of H^-1
    Q = torch.zeros_like(W)
    _gptq_columns(W, Q, Hinv, s, block_size, keep)
    return Q.to(torch.int8), scale


def _gptq_columns(W: torch.Tensor, Q: torch.Tensor, Hinv: torch.Tensor, s: torch.Tensor, block_size: int,
                  keep: torch.Tensor):
    """GPTQ's column loop in place: W (out, in) is updated, Q (out, in) receives the integers.

    Entries where ``keep`` is 0 are quantized to 0 whatever the error feedback has written into them, and
    their whole value is fed forward as error (SparseGPT's rule for a fixed mask), so pruned zeros survive.
    """
    n_cols = W.shape[1]
    for i1 in range(0, n_cols, block_size):
        i2 = min(i1 + block_size, n_cols)
        W1 = W[:, i1:i2].clone()  # (out, b)
        Err = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i : i + 1]  # (out, 1)
            q = torch.round(w / s).clamp_(-128, 127) * keep[:, i1 + i : i1 + i + 1]
            Q[:, i1 + i : i1 + i + 1] = q
            err = (w - q * s) / Hinv1[i, i]
            W1[:, i:] -= err @ Hinv1[i : i + 1, i:]
            Err[:, i : i + 1] = err
        W[:, i2:] -= Err @ Hinv[i1:i2, i2:]


def gptq_quantize_model(
    model: nn.Module, targets: dict[str, nn.Module], batches, damp: float = 0.01, block_size: int = 128
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (int8 weight (out, in), scale (out, 1)) for every target nn.Linear / Conv1D."""
    hessians = collect_hessians(model, targets, batches)
    result = {}
    for name, module in tqdm(targets.items(), desc="gptq", leave=False):
        try:
            result[name] = gptq_quantize_weight(weight_out_in(module).detach(), hessians.pop(name), damp,
                                                block_size)
        except torch.linalg.LinAlgError as exc:
            raise QuantizationError(
                f"GPTQ of {name}: its Hessian is not positive definite ({str(exc).splitlines()[0]}); raise "
                f"`gptq_damp` (got {damp}) or use method='rtn'") from exc
    logger.info("GPTQ rounded %d layers", len(result))
    return result
