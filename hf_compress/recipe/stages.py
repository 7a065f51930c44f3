"""Running one recipe stage: the registry (:mod:`hf_compress.core.registry`) names its handler.

A handler takes the :class:`StageContext` and its config and returns the model to carry on with plus a
small JSON-able record of what it did (kept in ``compression_config.json``). Handlers import their method's
code inside the function, so validating a recipe loads none of it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

__all__ = ["StageContext", "run_stage"]

logger = logging.getLogger(__name__)


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

    def batches(self, n: int) -> list[dict]:
        """The first ``n`` calibration batches (importance scores, Wanda, GPTQ)."""
        from ..evaluation import tokenize_batches

        texts = self.texts[: n * self.batch_size]
        return tokenize_batches(self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length)


def run_stage(ctx: StageContext, name: str, cfg) -> dict:
    """Run one stage on ``ctx.model`` (replaced by the result) and return its record."""
    logger.info("stage %s: %s", name, cfg)
    from ..core.registry import get_method

    model, record = get_method(name).handler(ctx, cfg)
    ctx.model = model.eval()
    record = {"stage": name, **record}
    ctx.records.append(record)
    return record
