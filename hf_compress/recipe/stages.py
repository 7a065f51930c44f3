"""Running one recipe stage: the registry (:mod:`hf_compress.core.registry`) names its handler.

A handler takes the :class:`StageContext` and its config and returns the model to carry on with plus a
small JSON-able record of what it did (kept in ``compression_config.json``). Handlers import their method's
code inside the function, so validating a recipe loads none of it.
"""

from __future__ import annotations

import logging

from ..core.context import StageContext

__all__ = ["StageContext", "run_stage"]

logger = logging.getLogger(__name__)


def run_stage(ctx: StageContext, name: str, cfg) -> dict:
    """Run one stage on ``ctx.model`` (replaced by the result) and return its record."""
    logger.info("stage %s: %s", name, cfg)
    from ..core.registry import get_method

    model, record = get_method(name).handler(ctx, cfg)
    ctx.model = model.eval()
    record = {"stage": name, **record}
    ctx.records.append(record)
    return record
