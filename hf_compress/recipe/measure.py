"""Measurements a recipe run reports: size, CPU latency and quality against the base model.

Every number comes from :mod:`hf_compress.evaluation` (offline, plain code); the topic probe is a
nearest-centroid classifier of Wikipedia topics on mean-pooled embeddings (no training, no downloads).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .probes import outside_probes, topic_probe
from .schema import EMBEDDING_METRICS

__all__ = ["EvalData", "quality_key", "agreement", "measure", "topic_probe", "clip_length"]

logger = logging.getLogger(__name__)


@dataclass
class EvalData:
    """Held-out inputs shared by every measurement of one run."""

    texts: list[str]
    batches: list[dict]  # tokenized held-out texts
    latency_inputs: dict  # one batch, the same for every model
    tokenizer: object
    max_length: int = 128


def clip_length(model, max_length: int) -> int:
    """``max_length`` capped at the model's position limit (``max_position_embeddings`` / ``n_positions``)."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    return min(max_length, limit) if limit else max_length


def quality_key(task: str) -> str:
    """Column of the agreement-with-base measure for a task."""
    return "embedding_cosine" if task == "feature-extraction" else "teacher_agreement"


def agreement(model, base, task: str, batches: list[dict]) -> float:
    """Quality against the base model: embedding cosine (feature extraction) or argmax agreement."""
    from ..evaluation import embedding_cosine, teacher_agreement

    if task == "feature-extraction":
        return embedding_cosine(base, model, batches)
    return teacher_agreement(model, base, batches)


@torch.inference_mode()
def measure(
    name: str, model, base, task: str, metrics: list[str], data: EvalData | None, repeats: int = 3
) -> dict:
    """One row of the results table for ``model`` (``base`` is the model as loaded)."""
    from ..evaluation import latency_side_by_side, model_bytes, param_count, perplexity

    model.eval()
    row = {"model": name, "params": param_count(model), "mem_bytes": model_bytes(model)}
    if data is None:
        return row
    if "latency" in metrics:
        row["latency_ms"] = (
            1e3 * latency_side_by_side({name: model}, data.latency_inputs, repeats=repeats, warmup=1)[name]
        )
    if "teacher_agreement" in metrics:
        bar = tqdm(data.batches, desc=f"{name}: agreement with base", leave=False)
        row[quality_key(task)] = agreement(model, base, task, bar)
    if "perplexity" in metrics:
        row["perplexity"] = perplexity(model, data.tokenizer, data.texts, max_length=data.max_length)
    if "topic_probe" in metrics:
        row["topic_probe"] = topic_probe(model, data.tokenizer, max_length=data.max_length)
    if any(m in EMBEDDING_METRICS for m in metrics):
        row.update(outside_probes(model, data.tokenizer, metrics, max_length=data.max_length))
    logger.info("measured %s: %s", name, {k: v for k, v in row.items() if k != "model"})
    return row
