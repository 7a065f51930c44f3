"""Models of candidate structures, built by running their structural stages through the registry, cached by
stage prefix: the model with 2 layers dropped is built once for every width / heads variant of it, and no
stage list is run twice while its result is in the cache.

The same cache serves the real surgery (importance on the calibration texts, the candidates the planner
scores and heals) and the random-weight shapes of the cost model (dropped layers named, heads pruned at
random: any choice gives the same shape).
"""

from __future__ import annotations

import copy
import json
from collections import OrderedDict

import torch

from ..core.context import StageContext
from ..core.registry import get_method

__all__ = ["run_stages", "stage_config", "PrefixCache"]


def stage_config(name: str, fields: dict):
    """The registered config of stage ``name`` built from ``fields`` (its own checks run)."""
    from ..errors import HfCompressError

    try:
        return get_method(name).config_cls(**fields)
    except TypeError as exc:  # a registered method whose fields differ from the planner's vocabulary
        raise HfCompressError(f"stage {name} does not take {sorted(fields)}: {exc}") from None


def run_stages(ctx: StageContext, stages: list[tuple[str, dict]]) -> list[dict]:
    """Run ``stages`` on ``ctx.model`` through the registry (as the recipe runner does); their records."""
    records = []
    for name, fields in stages:
        torch.manual_seed(ctx.seed)
        model, record = get_method(name).handler(ctx, stage_config(name, fields))
        ctx.model = model.eval()
        records.append({"stage": name, **record})
    ctx.records.extend(records)
    return records


class PrefixCache:
    """``get(stages) -> (model, records)``: ``ctx.model`` after ``stages``, each prefix's result kept (the
    ``size`` most recently used), so that a stage list sharing a prefix with an earlier one only runs the
    rest. Every model handed out is the cache's own: copy it before changing it.

    Each stage also gets the memo of its prefix (:meth:`StageContext.memoized`), kept when the model is
    evicted: importance scores are computed once per model they score, e.g. FFN neuron importance once for
    all the FFN fractions tried after the same layers were dropped."""

    def __init__(self, ctx: StageContext, size: int = 6):
        self.ctx, self.size = ctx, size
        self._cache: OrderedDict = OrderedDict()  # stage prefix (json) -> (model, records)
        self._memos: dict[str, dict] = {}  # stage prefix (json) -> memo of the model after it (small scores)
        self.runs = 0  # stages run (tests: a shared prefix runs once)

    def get(self, stages: list[tuple[str, dict]]):
        model, records, done = self.ctx.model, [], 0
        for n in range(len(stages), 0, -1):
            key = json.dumps(stages[:n], sort_keys=True)
            if key in self._cache:
                self._cache.move_to_end(key)
                (model, records), done = self._cache[key], n
                break
        for n in range(done, len(stages)):
            ctx = copy.copy(self.ctx)
            ctx.model, ctx.records = copy.deepcopy(model), []
            ctx.memo = self._memos.setdefault(json.dumps(stages[:n], sort_keys=True), {})
            records = records + run_stages(ctx, [stages[n]])
            model, self.runs = ctx.model, self.runs + 1
            self._cache[json.dumps(stages[: n + 1], sort_keys=True)] = (model, records)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return model, records

    def then(self, model, stage: tuple[str, dict] | None):
        """A copy of ``model`` after one more stage (not cached: int8 variants are cheap next to surgery)."""
        if stage is None:
            return model
        ctx = copy.copy(self.ctx)
        ctx.model, ctx.records = copy.deepcopy(model), []
        run_stages(ctx, [stage])
        return ctx.model
