"""Weight sparsity: magnitude and Wanda pruning, unstructured or N:M (2:4), kept through training.

    >>> from hf_compress import sparsify, sparsity_report
    >>> sparsify(model, sparsity=0.5, method="wanda", calibration=batches)       # in place, returns model
    >>> sparsify(model, method="magnitude", pattern="2:4")
    >>> print(sparsity_report(model))

Targets are the projections of every block listed by :mod:`hf_compress.arch` (``spec.linear_paths``);
embeddings, norms and heads are never touched. Scores are compared in the ``(out, in)`` view of a weight
(GPT-2's ``Conv1D`` stores ``[in, out]`` and is transposed for scoring), so ``per_row`` means per output
unit and N:M groups run along the input dimension:

* magnitude: ``|W|`` -- pruning the smallest k is the exact projection onto the weights with k zeros;
* wanda: ``|W_ij| * ||X_j||_2`` (calibration activations, see :mod:`.wanda`).

Masks live in non-persistent buffers and hooks (:mod:`.sparsity_masks`): zeros survive any trainer, and
``save_pretrained`` writes a stock dense checkpoint with zeros. ``config.sparsity_config`` records the pattern
and measured sparsity (stock transformers stores it and otherwise ignores it).
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

from ...arch import get_arch, get_layers
from ...core.modules import to_weight_layout, weight_out_in
from ...core.targets import block_projections, find_projections
from ...errors import SurgeryError
from . import wanda
from .config import SparsityConfig
from .masks import attach_mask, get_mask, make_permanent
from .report import SparsityReport, sparsity_report

__all__ = ["SparsityConfig", "sparsify", "sparsity_report", "SparsityReport", "make_permanent",
           "find_targets", "keep_mask", "nm_keep_mask", "smallest_keep_mask"]

logger = logging.getLogger(__name__)

# the keyword settings of sparsify() and their defaults: any other value beside `config` is refused
_DEFAULTS = {"sparsity": None, "method": "magnitude", "pattern": "unstructured", "scope": "per_row",
             "ignore": ("lm_head",), "sequential": None}


def find_targets(model: nn.Module, ignore=()) -> list[dict[str, nn.Module]]:
    """Per block, ``{name: module}`` of the projections to prune (``spec.linear_paths``, not ignored)."""
    chosen = find_projections(model, ignore, blocks_only=True)
    return [{n: m for n, m in block.items() if n in chosen} for block in block_projections(model)]


def _rows(module: nn.Module) -> torch.Tensor:
    """The weight in ``(out, in)`` layout (a transposed view for ``Conv1D``)."""
    return weight_out_in(module).detach()


def smallest_keep_mask(scores: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Keep-mask of a 1-D score vector with exactly ``n_prune`` of the smallest scores pruned (ties: first
    positions pruned first)."""
    keep = torch.ones_like(scores, dtype=torch.bool)  # (N,)
    if n_prune <= 0:
        return keep
    if n_prune >= scores.numel():
        return ~keep
    threshold = scores.kthvalue(n_prune).values
    keep = scores > threshold
    ties = (scores == threshold).nonzero().flatten()
    n_ties_pruned = n_prune - int((scores < threshold).sum())
    keep[ties[n_ties_pruned:]] = True
    return keep


def nm_keep_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping the ``n`` largest of every ``m`` consecutive scores of a row. scores: (out, in)."""
    out_f, in_f = scores.shape
    if in_f % m:
        raise SurgeryError(f"pattern {n}:{m} needs the input dimension to be a multiple of {m}, got {in_f}; "
                           f"ignore this module with ignore=[...]")
    groups = scores.reshape(out_f, in_f // m, m)  # (out, in/m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(-1, groups.topk(n, dim=-1).indices, True)
    return keep.reshape(out_f, in_f)


def keep_mask(scores: torch.Tensor, config: SparsityConfig) -> torch.Tensor:
    """Keep-mask of one ``(out, in)`` score matrix for ``per_row``, ``per_layer`` or N:M."""
    if config.n_m:
        return nm_keep_mask(scores, *config.n_m)
    if config.scope == "per_layer":
        return smallest_keep_mask(scores.flatten(), int(scores.numel() * config.sparsity)).view_as(scores)
    n_prune = int(scores.shape[1] * config.sparsity)  # per_row
    keep = torch.ones_like(scores, dtype=torch.bool)
    if n_prune:
        keep.scatter_(1, scores.topk(n_prune, dim=1, largest=False).indices, False)
    return keep


def _scores(module: nn.Module, norms: torch.Tensor | None) -> torch.Tensor:
    rows = _rows(module).abs().float()  # (out, in)
    if norms is None:
        return rows
    return rows * norms.to(rows.device)[None, :]


def _global_masks(targets: dict[str, nn.Module], norms, config: SparsityConfig) -> dict[str, torch.Tensor]:
    scores = {n: _scores(m, norms[n] if norms else None) for n, m in targets.items()}
    flat = torch.cat([s.flatten() for s in scores.values()])  # (all target weights,)
    keep = smallest_keep_mask(flat, int(flat.numel() * config.sparsity))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start:start + s.numel()].view_as(s)
        start += s.numel()
    return out


def sparsify(model: nn.Module, sparsity: float | None = None, method: str = "magnitude",
             pattern: str = "unstructured", scope: str = "per_row", ignore=("lm_head",), calibration=None,
             *, sequential: bool | None = None, config: SparsityConfig | None = None) -> nn.Module:
    """Prune ``model`` in place and keep the pruned weights at zero (through training, into checkpoints).

    Args:
        sparsity: fraction of each scope's weights set to zero (default 0.5; N:M patterns imply it).
        method: ``"magnitude"`` (|W|) or ``"wanda"`` (|W| * input-activation norm; needs ``calibration``).
        pattern: ``"unstructured"`` or ``"N:M"`` such as ``"2:4"`` (N kept of every M inputs).
        scope: where weights compete: ``"per_row"`` (each output unit; Wanda's choice), ``"per_layer"``
            or ``"global"`` (all targets together).
        ignore: module names (exact), class names or ``"re:"`` regexes (``re.match`` on the full name) to
            leave dense -- the same rule as :func:`hf_compress.methods.int8.quantize.matches_ignore`.
        calibration: iterable of tokenized batches (dicts with ``input_ids``, ``attention_mask``) for Wanda.
        config: a :class:`SparsityConfig` instead of the keyword arguments.

    Returns the same model, whose ``config.sparsity_config`` records the pattern and measured sparsity.
    """
    settings = dict(sparsity=sparsity, method=method, pattern=pattern, scope=scope, ignore=tuple(ignore or ()),
                    sequential=sequential)
    given = sorted(k for k, v in settings.items() if v != _DEFAULTS[k])
    if config is not None and given:
        raise SurgeryError(f"pass either `config` or keyword settings, got both (keywords {given}); put them in "
                           f"the config: dataclasses.replace(config, {given[0]}=...)")
    if config is None:
        config = SparsityConfig(sparsity=sparsity, method=method, pattern=pattern, scope=scope,
                                ignore=list(ignore or []), sequential=sequential)
    blocks = find_targets(model, config.ignore)
    targets = {n: m for block in blocks for n, m in block.items()}
    if not targets:
        raise SurgeryError(f"`ignore`={config.ignore!r} leaves nothing to prune in {type(model).__name__}")
    before = sparsity_report(model, modules=targets).sparsity
    if before > config.sparsity + 1e-6:  # masks only add zeros: a lower target would be silently ignored
        raise SurgeryError(f"the model is already {before:.0%} sparse in these modules; sparsity "
                           f"{config.sparsity!r} cannot make it denser: ask for >= {before:.2f} or start from "
                           f"the dense model")
    if config.n_m:  # validate every target before the first change
        m = config.n_m[1]
        bad = [n for n, mod in targets.items() if _rows(mod).shape[1] % m]
        if bad:
            raise SurgeryError(f"pattern {config.pattern!r} needs input dimensions that are a multiple of "
                               f"{m}, but {bad[0]} has {_rows(targets[bad[0]]).shape[1]}; add it to `ignore`")

    def prune(names, norms=None):
        for name in names:
            module = targets[name]
            keep = keep_mask(_scores(module, norms[name] if norms else None), config)
            attach_mask(module, to_weight_layout(module, keep))

    batches = wanda.prepare_batches(calibration, model) if config.method == "wanda" else None
    if config.method == "wanda" and config.sequential:
        wanda.sequential_norms(model, get_layers(model), blocks, batches, lambda norms: prune(norms, norms))
    else:
        norms = wanda.one_pass_norms(model, targets, batches) if batches else None
        if config.scope == "global":
            for name, keep in _global_masks(targets, norms, config).items():
                attach_mask(targets[name], to_weight_layout(targets[name], keep))
        else:
            prune(targets, norms)

    report = sparsity_report(model, modules=targets)
    model.config.sparsity_config = {
        "format": "dense", "sparsity_structure": config.pattern, "global_sparsity": round(report.sparsity, 6),
        "targets": list(get_arch(model).linear_paths), "ignore": config.ignore, "method": config.method,
        "scope": config.scope, "requested_sparsity": config.sparsity,
        "model_sparsity": round(report.model_sparsity, 6), "produced_by": "hf_compress",
    }
    logger.info("sparsified %d modules: %.1f%% of their weights are zero", len(targets),
                100 * report.sparsity)
    return model
