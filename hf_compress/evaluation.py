"""Offline measurements: size, latency, perplexity, embedding agreement and task metrics.

Nothing here fetches metric scripts from the Hub (``evaluate.load("accuracy")`` would): metrics are plain
code on tensors. Latency is always measured side by side, models interleaved round-robin in one process,
and reported as medians, because the machines this runs on are shared and noisy.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .core.modules import native_bf16_cpu  # noqa: F401  (re-exported: benchmarks pick fp32 with it)
from .assets import wiki_texts  # the bundled corpus, split by the one held-out rule
from .core.context import tokenize_batches  # shared with the stage context

__all__ = [
    "param_count",
    "model_bytes",
    "checkpoint_bytes",
    "tokenize_batches",
    "perplexity",
    "texts_for_tokens",
    "mean_pooled",
    "embedding_cosine",
    "latency_side_by_side",
    "wiki_texts",
    "accuracy",
    "teacher_agreement",
    "report_path",
    "write_report",
    "reload_check",
    "native_bf16_cpu",
]

_WEIGHT_BUFFER_SUFFIXES = ("weight", "weight_packed")


def param_count(model: nn.Module) -> int:
    """Number of weights: unique parameters, plus quantized weights held as buffers (int8 modules).

    A packed int32 buffer (``weight_packed``, four int8 values per element) counts four weights per element.
    """
    total = sum(p.numel() for p in model.parameters())
    for name, buf in model.named_buffers():
        if name.rsplit(".", 1)[-1] in _WEIGHT_BUFFER_SUFFIXES and buf.dtype in (torch.int8, torch.int32):
            total += buf.numel() * (4 if buf.dtype == torch.int32 else 1)
    return total


def model_bytes(model: nn.Module) -> int:
    """Bytes held by the model's unique parameters and buffers in memory."""
    tensors = {id(t): t for t in list(model.parameters()) + list(model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def checkpoint_bytes(path: str | Path) -> int:
    """Bytes of the weight files of a checkpoint folder (``*.safetensors``), or of one file."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def texts_for_tokens(texts: Sequence[str], tokens: int, chars_per_token: float = 3.0) -> list[str]:
    """The shortest prefix of ``texts`` with at least ``tokens * chars_per_token`` characters: enough text
    for about ``tokens`` tokens (callers such as :func:`perplexity` cap the tokens exactly)."""
    out, chars = [], 0
    for t in texts:
        out.append(t)
        chars += len(t)
        if chars >= tokens * chars_per_token:
            break
    return out


@torch.inference_mode()
def perplexity(model: nn.Module, tokenizer, texts: Sequence[str], max_length: int = 512, batch_size: int = 4,
               max_tokens: int | None = None, progress: bool = True) -> float:
    """Held-out perplexity of a causal LM: exp(mean next-token NLL).

    The texts are joined with blank lines, tokenized once and cut into non-overlapping windows of
    ``max_length`` tokens (the last partial window is dropped); every position after the first of each
    window is predicted. ``max_tokens`` caps the tokens used (whole windows).
    """
    ids = tokenizer("\n\n".join(texts), return_tensors="pt", add_special_tokens=False)["input_ids"][0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    n_windows = ids.numel() // max_length
    if n_windows == 0:
        raise ValueError(f"texts give {ids.numel()} tokens, fewer than one window of max_length={max_length}")
    windows = ids[: n_windows * max_length].view(n_windows, max_length)  # (W, T)
    device = next(model.parameters()).device
    nll_sum, count = 0.0, 0
    for start in tqdm(range(0, n_windows, batch_size), desc="perplexity", disable=not progress, leave=False):
        batch = windows[start : start + batch_size].to(device)  # (B, T)
        logits = model(input_ids=batch).logits.float()  # (B, T, V)
        nll = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1),
                              reduction="sum")
        nll_sum += nll.item()
        count += batch[:, 1:].numel()
    return float(torch.exp(torch.tensor(nll_sum / count)))


def mean_pooled(model: nn.Module, batch: dict) -> torch.Tensor:
    """Sentence embeddings as sentence-transformers computes them: mean over valid tokens, L2-normalised."""
    out = model(**batch, output_hidden_states=True)
    hidden = getattr(out, "last_hidden_state", None)
    if hidden is None:
        hidden = out.hidden_states[-1]
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
    return F.normalize(pooled.float(), dim=-1)


@torch.inference_mode()
def embedding_cosine(reference: nn.Module, candidate: nn.Module, batches: Iterable[dict]) -> float:
    """Mean cosine similarity between the two models' mean-pooled embeddings of the same sentences."""
    sims = [(mean_pooled(reference, b) * mean_pooled(candidate, b)).sum(-1) for b in batches]
    return float(torch.cat(sims).mean())


@torch.inference_mode()
def latency_side_by_side(models: dict[str, nn.Module], inputs: dict, repeats: int = 10,
                         warmup: int = 2) -> dict[str, float]:
    """Median forward latency in seconds of each model on the same ``inputs``.

    The models run interleaved (round-robin, the order rotated every round) so that load on a shared
    machine hits them alike; compare ratios, not absolute times.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"`repeats` must be >= 1 and `warmup` >= 0, got repeats={repeats}, warmup={warmup}")
    names = list(models)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            start = time.perf_counter()
            models[name](**inputs)
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    return {n: statistics.median(t) for n, t in times.items()}


def accuracy(predictions, labels) -> float:
    """Fraction of equal entries (plain code: no metric script is downloaded)."""
    predictions, labels = torch.as_tensor(predictions), torch.as_tensor(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions and labels must have the same shape, got {tuple(predictions.shape)} "
                         f"and {tuple(labels.shape)}")
    if labels.numel() == 0:
        raise ValueError("accuracy of an empty set is undefined: got 0 labels")
    return float((predictions == labels).float().mean())


@torch.inference_mode()
def teacher_agreement(student: nn.Module, teacher: nn.Module, batches: Iterable[dict]) -> float:
    """Fraction of examples (classifiers) or valid tokens (LMs) where student and teacher argmax agree."""
    agree, total = 0, 0
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        s, t = student(**inputs).logits.argmax(-1), teacher(**inputs).logits.argmax(-1)
        if s.dim() == 2 and "attention_mask" in inputs:  # token-level: count valid tokens only
            mask = inputs["attention_mask"].bool()
            agree += int((s == t)[mask].sum())
            total += int(mask.sum())
        else:
            agree += int((s == t).sum())
            total += s.numel()
    return agree / max(total, 1)


def report_path(output: str | Path | None, published: str | Path, smoke: bool) -> Path:
    """Where a benchmark writes its table: ``output`` when given, else the ``published`` table for a full
    run, else (``smoke``: a --tiny / --quick run) ``<tmp>/<name>-smoke.md``, so a smoke run never overwrites
    a published table unless asked for it by name."""
    import tempfile

    if output is not None:
        return Path(output)
    published = Path(published)
    return Path(tempfile.gettempdir()) / f"{published.stem}-smoke{published.suffix}" if smoke else published


def write_report(path: str | Path, text: str) -> Path:
    """Write a benchmark table to ``path`` atomically (a temporary file beside it, then a rename), creating
    the folder; a run killed mid-write leaves the previous table, never half of a new one."""
    import os
    import tempfile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@torch.inference_mode()
def reload_check(model: nn.Module, auto_cls, batch: dict, remote: bool = False) -> str:
    """Save ``model``, reload it with ``auto_cls.from_pretrained`` (``trust_remote_code=remote``) and compare
    the outputs on ``batch``: ``"max diff <d>, <MB> MB"`` (the checkpoint's weight files)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        again = auto_cls.from_pretrained(tmp, trust_remote_code=remote).eval()
        a, b = model(**batch), again(**batch)
        key = "logits" if hasattr(a, "logits") else "last_hidden_state"
        diff = (getattr(a, key) - getattr(b, key)).abs().max().item()
        return f"max diff {diff:.1e}, {checkpoint_bytes(tmp) / 1e6:.0f} MB"
