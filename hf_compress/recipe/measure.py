"""Measurements a recipe run reports: size, CPU latency and quality against the base model.

Every number comes from :mod:`hf_compress.evaluation` (offline, plain code); the topic probe is a
nearest-centroid classifier of Wikipedia topics on mean-pooled embeddings (no training, no downloads).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

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
def topic_probe(model, tokenizer, n_train: int = 480, n_test: int = 240, max_length: int = 128) -> float:
    """Accuracy of nearest-centroid topic classification of held-out Wikipedia summaries from the model's
    mean-pooled embeddings; centroids come from calibration summaries (the split of ``wiki_texts``)."""
    from ..assets import load_wiki_summaries
    from ..evaluation import accuracy, mean_pooled, tokenize_batches

    train = load_wiki_summaries("calibration")[::7][:n_train]
    test = load_wiki_summaries("heldout")[:n_test]
    topics = sorted({r["topic"] for r in train})

    def embed(items):
        batches = tokenize_batches(
            tokenizer, [r["extract"] for r in items], batch_size=16, max_length=max_length
        )
        bar = tqdm(batches, desc="topic probe", leave=False)
        return torch.cat([mean_pooled(model, b) for b in bar])  # (N, H)

    emb, labels = embed(train), torch.tensor([topics.index(r["topic"]) for r in train])
    centroids = torch.stack([emb[labels == k].mean(0) for k in range(len(topics))])  # (K, H)
    centroids = torch.nn.functional.normalize(centroids, dim=-1)
    pred = (embed(test) @ centroids.T).argmax(-1)
    truth = [topics.index(r["topic"]) if r["topic"] in topics else -1 for r in test]
    return accuracy(pred, torch.tensor(truth))


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
    logger.info("measured %s: %s", name, {k: v for k, v in row.items() if k != "model"})
    return row
