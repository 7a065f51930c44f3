"""Quality of a candidate against the original model: a cheap proxy (no training) and a score in [0, 1].

The proxy is the KL divergence from the original's next-token (or masked-token, or class) distribution to
the candidate's, averaged over the valid tokens of calibration batches; a model without logits (sentence
embeddings) uses ``1 - cosine`` of the mean-pooled embeddings instead. Lower is better, 0 for the original.
The score is what the card reports: embedding cosine (feature extraction) or top-1 agreement (others).

The original's side of the proxy is the same for every candidate: :class:`ReferenceOutputs` computes it
once (log-probabilities, or pooled embeddings) and keeps what fits in ``max_bytes``; the rest is recomputed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["proxy_loss", "quality_score", "quality_name", "ReferenceOutputs"]


def _logits(model, batch):
    out = model(**batch)
    return out.logits.float()


def _output(model, batch: dict, task: str) -> torch.Tensor:
    """What the proxy compares: pooled, normalised embeddings (B, H), or log-probabilities (B, T, V) / (B, C)."""
    from ..evaluation import mean_pooled

    if task == "feature-extraction":
        return mean_pooled(model, batch)
    return F.log_softmax(_logits(model, batch), -1)


class ReferenceOutputs:
    """The original model's proxy outputs on ``batches``, computed on first use; kept while their total stays
    within ``max_bytes`` (SmolLM2's 4 × 8 × 128 tokens of 49k log-probabilities: 0.8 GB), recomputed beyond."""

    def __init__(self, model, batches: list[dict], task: str, max_bytes: int = 2**30):
        self.model, self.batches, self.task, self.max_bytes = model, batches, task, max_bytes
        self._kept: dict[int, torch.Tensor] = {}
        self._used, self.computed = 0, 0  # bytes kept; forwards run (tests)

    @torch.inference_mode()
    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self._kept:
            return self._kept[i]
        out = _output(self.model, self.batches[i], self.task)
        self.computed += 1
        size = out.numel() * out.element_size()
        if self._used + size <= self.max_bytes:
            self._kept[i], self._used = out, self._used + size
        return out


@torch.inference_mode()
def proxy_loss(original, candidate, batches: list[dict], task: str) -> float:
    """Mean KL(original ‖ candidate) per valid token (or ``1 - cosine`` for feature extraction); finite.
    ``original``: the model, or its :class:`ReferenceOutputs` on these same ``batches``."""
    from ..errors import HfCompressError

    if isinstance(original, ReferenceOutputs):
        if original.batches is not batches:
            raise HfCompressError("proxy_loss: the ReferenceOutputs were computed on other batches")
        reference = original
    else:
        reference = ReferenceOutputs(original, batches, task, max_bytes=0)
    if task == "feature-extraction":
        sims = [(reference[i] * _output(candidate, b, task)).sum(-1) for i, b in enumerate(batches)]
        value = 1.0 - float(torch.cat(sims).mean())
    else:
        total, count = 0.0, 0
        for i, batch in enumerate(batches):
            p = reference[i]  # (B, T, V) or (B, C)
            q = _output(candidate, batch, task)
            kl = (p.exp() * (p - q)).sum(-1)  # (B, T) or (B,)
            if kl.dim() == 2 and "attention_mask" in batch:
                mask = batch["attention_mask"].bool()
                total, count = total + float(kl[mask].sum()), count + int(mask.sum())
            else:
                total, count = total + float(kl.sum()), count + kl.numel()
        value = total / max(count, 1)
    return value if math.isfinite(value) else math.inf


def quality_name(task: str) -> str:
    return "embedding_cosine" if task == "feature-extraction" else "teacher_agreement"


@torch.inference_mode()
def quality_score(original, candidate, batches: list[dict], task: str) -> float:
    """Embedding cosine (feature extraction) or top-1 agreement with the original (1.0 = the original)."""
    from ..evaluation import embedding_cosine, teacher_agreement

    if task == "feature-extraction":
        return embedding_cosine(original, candidate, batches)
    return teacher_agreement(candidate, original, batches)
