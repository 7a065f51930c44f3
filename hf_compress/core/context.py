"""What a method's handler receives: the :class:`StageContext` (the model being compressed, the teacher,
the tokenizer and texts, ``batches(n)`` for calibration). The recipe runner and the planner both build one;
a handler is ``handler(ctx, cfg) -> (model, record)`` (:mod:`hf_compress.core.registry`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["StageContext", "tokenize_batches"]


def tokenize_batches(tokenizer, texts: Sequence[str], batch_size: int = 8, max_length: int = 128) -> list[dict]:
    """Padded, truncated batches (``input_ids``, ``attention_mask``, ...) of ``texts`` in order."""
    batches = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        batches.append(dict(tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                                      return_tensors="pt")))
    return batches


@dataclass
class StageContext:
    model: torch.nn.Module  # the model being compressed (changes stage by stage)
    teacher: torch.nn.Module  # the model as loaded: distillation teacher and quality reference
    tokenizer: object
    texts: list[str]  # training / calibration texts
    task: str
    seed: int = 0
    batch_size: int = 8
    max_length: int = 128
    max_positions: int | None = None  # the model's position limit: no stage tokenizes longer
    records: list[dict] = field(default_factory=list)
    # results of pure computations on ``model`` as it enters the stage (importance scores), shared by stages
    # run on that same model: the planner's prefix cache hands each stage the memo of its prefix; None (the
    # recipe runner, whose model changes every stage): nothing is kept
    memo: dict | None = None

    def memoized(self, key: tuple, compute):
        """``compute()``, kept in :attr:`memo` under ``key`` when there is one (the same model, the same
        calibration batches: the same result). Callers must not change what it returns."""
        if self.memo is None:
            return compute()
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def batches(self, n: int) -> list[dict]:
        """The first ``n`` calibration batches (importance scores, Wanda, GPTQ)."""
        texts = self.texts[: n * self.batch_size]
        return tokenize_batches(self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length)
