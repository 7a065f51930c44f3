"""Quality of a candidate against the original model: a cheap proxy (no training) and a score in [0, 1].

The proxy is the KL divergence from the original's next-token (or masked-token, or class) distribution to
the candidate's, averaged over the valid tokens of calibration batches; a model without logits (sentence
embeddings) uses ``1 - cosine`` of the mean-pooled embeddings instead. Lower is better, 0 for the original.
The score is what the card reports: embedding cosine (feature extraction) or top-1 agreement (others).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["proxy_loss", "quality_score", "quality_name"]


def _logits(model, batch):
    out = model(**batch)
    return out.logits.float()


@torch.inference_mode()
def proxy_loss(original, candidate, batches: list[dict], task: str) -> float:
    """Mean KL(original ‖ candidate) per valid token (or ``1 - cosine`` for feature extraction); finite."""
    from ..evaluation import embedding_cosine

    if task == "feature-extraction":
        value = 1.0 - embedding_cosine(original, candidate, batches)
    else:
        total, count = 0.0, 0
        for batch in batches:
            p = F.log_softmax(_logits(original, batch), -1)  # (B, T, V) or (B, C)
            q = F.log_softmax(_logits(candidate, batch), -1)
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
