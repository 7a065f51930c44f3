"""Which items of a batch count in each loss term, and how many there are in one accumulation window.

Shared by the trainer (loss denominators), the metrics (eval sums) and the teacher cache (which positions a
cached row must cover). Valid logit positions:

- causal LMs shift like the model's own loss (position ``i`` predicts token ``i + 1``) and keep
  ``attention_mask[:, 1:] & labels[:, 1:] != -100``;
- other token heads keep ``attention_mask & labels != -100`` (labels only when present);
- sequence classifiers count examples.

Hidden-state positions are the attended tokens. The task term counts the model's own label items (a sequence
classifier's rows labelled -100 are unlabelled: the teacher's logits still count, its cross-entropy skips
them); the sentence-embedding term counts sequences with at least one attended token. The relation term pairs
the ``n`` such sequences of one micro-batch with each other: ``"mse"`` counts the ``n (n - 1)`` ordered pairs,
``"kl"`` the ``n`` rows when ``n >= 2`` (0 otherwise); a window's count is the sum over its micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .options import RELATION_LOSSES

__all__ = ["WindowCounts", "attention_mask_of", "batch_counts", "item_masks", "relation_count",
           "window_totals"]


@dataclass
class WindowCounts:
    """Valid items of one accumulation window: the denominators of the loss terms."""

    logits: torch.Tensor
    hidden: torch.Tensor
    task: torch.Tensor
    sequences: torch.Tensor  # the sentence-embedding term: sequences with an attended token
    relation: torch.Tensor  # the relation term: pairs ("mse") or rows ("kl") within each micro-batch, summed
    world_factor: float = 1.0  # the loss is multiplied by this (DDP averages gradients over processes)


def attention_mask_of(inputs: dict) -> torch.Tensor:
    """The batch's attention mask as bool ``(B, T)`` (all ones when the batch has none)."""
    ids = inputs.get("input_ids")
    ref = ids if ids is not None else inputs["inputs_embeds"][..., 0]
    attn = inputs.get("attention_mask")
    return torch.ones_like(ref, dtype=torch.bool) if attn is None else attn.bool()


def item_masks(inputs: dict, task: str) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(logit mask, hidden mask ``(B, T)``, task item count) of one micro-batch.

    The logit mask is ``(B,)`` for sequence classifiers, ``(B, T-1)`` for causal LMs, ``(B, T)`` otherwise.
    """
    attn = attention_mask_of(inputs)  # (B, T)
    labels = inputs.get("labels")
    if task == "sequence-classification":
        logit_mask = torch.ones(attn.shape[0], dtype=torch.bool, device=attn.device)  # (B,): KD on every row
        if labels is None:
            n_task = 0
        elif labels.dtype.is_floating_point or labels.dim() > 1:  # regression / multi-label: every row
            n_task = attn.shape[0]
        else:  # single-label cross-entropy skips -100: unlabelled rows get KD only
            n_task = int(labels.ne(-100).sum())
    elif task == "causal-lm":
        logit_mask = attn[:, 1:]  # (B, T-1): position i predicts token i+1
        if labels is not None:
            logit_mask = logit_mask & labels[:, 1:].ne(-100)
        n_task = int(labels[:, 1:].ne(-100).sum()) if labels is not None else 0
    else:
        logit_mask = attn if labels is None else attn & labels.ne(-100)
        n_task = int(labels.ne(-100).sum()) if labels is not None else 0
    return logit_mask, attn, n_task


def relation_count(n: int, loss: str = "mse") -> int:
    """Items of the relation term in one micro-batch with ``n`` sequences that have an attended token: the
    ordered pairs ``n (n - 1)`` (``"mse"``) or the rows with another sequence to rank, ``n`` if ``n >= 2``
    (``"kl"``)."""
    if loss not in RELATION_LOSSES:
        raise ValueError(f"`relation_loss` must be one of {', '.join(RELATION_LOSSES)}, got {loss!r}")
    return n * (n - 1) if loss == "mse" else (n if n >= 2 else 0)


def batch_counts(batch: dict, task: str, relation_loss: str = "mse") -> tuple[float, ...]:
    """One micro-batch's valid logit positions, hidden positions, task items, sequences with an attended token
    and relation items (the order of :class:`WindowCounts`)."""
    logit_mask, hidden_mask, n_task = item_masks(batch, task)
    n_seq = int(hidden_mask.any(1).sum())
    return (float(logit_mask.sum()), float(hidden_mask.sum()), float(n_task), float(n_seq),
            float(relation_count(n_seq, relation_loss)))


def window_totals(batches: list, task: str, relation_loss: str = "mse") -> torch.Tensor:
    """float64 ``(5,)``: :func:`batch_counts` summed over ``batches`` (the relation's items of
    ``relation_loss``)."""
    totals = torch.zeros(5, dtype=torch.float64)
    for batch in batches:
        totals += torch.tensor(batch_counts(batch, task, relation_loss), dtype=torch.float64)
    return totals
