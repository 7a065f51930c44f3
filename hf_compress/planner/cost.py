"""The cost model: parameters and bytes exactly, latency measured on this machine, per candidate shape.

A candidate's float shape is built from **random weights** of the base's configuration, shrunk by the same
stages the candidate runs (through the registry: dropped layers named explicitly, heads pruned at random),
so its cost is known before any importance score or training; shapes sharing stages share their prefix
(:class:`~.shapes.PrefixCache`). An int8 candidate is sized on its float shape by the int8 method's own byte
rule (``MethodSpec.predict_size``: no quantization, no calibration); a method without one is run on a copy.
Latency is measured side by side with a random base of the same configuration (interleaved in one process,
as every latency here) and cached per shape.
"""

from __future__ import annotations

import copy
import logging

import torch

from ..core.context import StageContext
from ..core.registry import get_method
from ..errors import HfCompressError
from .shapes import PrefixCache, run_stages, stage_config
from .space import Candidate

__all__ = ["run_stages", "stage_config", "CostModel", "LatencyFn"]

logger = logging.getLogger(__name__)

LatencyFn = object  # (models: dict[str, Module], inputs: dict) -> dict[str, seconds]


def random_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A model of ``model``'s class and configuration with fresh random weights (fp32, eval)."""
    torch.manual_seed(seed)
    return type(model)(copy.deepcopy(model.config)).eval()


def _counts(model) -> dict:
    from ..core.targets import find_projections
    from ..evaluation import model_bytes, param_count

    linear = sum(m.weight.numel() for m in find_projections(model, output_head=True).values())
    return {"params": param_count(model), "bytes": model_bytes(model), "linear_params": linear}


class CostModel:
    """Exact size and measured latency of candidate shapes; ``cache`` (shape key -> numbers) is what the
    planner's log saves, so a resumed search measures no shape twice."""

    def __init__(self, base_ctx: StageContext, base_layers: int, latency_inputs: dict, latency_fn=None,
                 cache: dict | None = None, repeats: int = 5):
        from ..evaluation import param_count

        self.base_layers = base_layers
        self.inputs = latency_inputs
        self.latency_fn = latency_fn or self._measure
        self.cache: dict[str, dict] = cache if cache is not None else {}
        self.repeats = repeats
        self._base = random_like(base_ctx.model, base_ctx.seed)
        self.base_params = param_count(base_ctx.model)
        ctx = copy.copy(base_ctx)
        ctx.model, ctx.records = self._base, []
        self.shapes = PrefixCache(ctx, size=4)
        self._float: dict[tuple, dict] = {}  # structure -> counts of its float shape
        self._sizes: dict[str, dict] = {}  # candidate key -> size

    def _measure(self, models: dict, inputs: dict) -> dict:
        from ..evaluation import latency_side_by_side

        with torch.inference_mode():
            return latency_side_by_side(models, inputs, repeats=self.repeats, warmup=2)

    def float_shape(self, cand: Candidate) -> torch.nn.Module:
        """The candidate's float shape on random weights (the cache's own model: do not change it)."""
        drop = list(range(cand.layers, self.base_layers))  # which layers does not change the shape
        cheap = {"prune_heads": {"method": "random"}, "prune_width": {"num_batches": 1}}  # scores: any will do
        stages = [(n, dict(f, **cheap.get(n, {}))) for n, f in cand.structural_stages(self.base_layers, drop)]
        model, _ = self.shapes.get(stages)
        return model

    def shape_model(self, cand: Candidate, compile: bool = True) -> torch.nn.Module:
        return self.shapes.then(self.float_shape(cand), cand.int8_stage(compile=compile))

    def size(self, cand: Candidate) -> dict:
        """``params``, ``params_ratio``, ``bytes``, ``mib`` (and ``linear_params``) of the candidate, exact:
        counted on its float shape, int8 by its method's byte rule. With a float fallback the layers kept
        float are chosen on real calibration data, so ``bytes`` is the most that choice can give and
        ``bytes_low`` the least (``bytes_exact`` False until the candidate is built on real weights)."""
        if cand.key in self._sizes:
            return dict(self._sizes[cand.key])
        if cand.structure not in self._float:
            self._float[cand.structure] = _counts(self.float_shape(cand))
        counts = dict(self._float[cand.structure])
        stage = cand.int8_stage(compile=False)
        if stage is not None:
            name, fields = stage
            rule = get_method(name).predict_size
            if rule is not None:
                dp, low, high = rule(self.float_shape(cand), stage_config(name, fields))
                params, low, high = counts["params"] + dp, counts["bytes"] + low, counts["bytes"] + high
            else:  # a method without a byte rule: run it on a copy of the shape and count
                built = _counts(self.shape_model(cand, compile=False))
                params, low, high = built["params"], built["bytes"], built["bytes"]
            counts.update(params=params, bytes=high)
            if low != high:
                counts.update(bytes_low=low, bytes_exact=False)
        counts.update(params_ratio=counts["params"] / self.base_params, mib=counts["bytes"] / 2**20)
        self._sizes[cand.key] = counts
        return dict(counts)

    def latency(self, cand: Candidate) -> dict:
        """``latency_ms``, ``base_latency_ms``, ``speedup`` of the candidate's shape (cached per shape)."""
        key = cand.shape_key
        if key not in self.cache:
            model = self.shape_model(cand, compile=True)
            times = self.latency_fn({"base": self._base, key: model}, self.inputs)
            base, mine = float(times["base"]), float(times[key])
            if not (base > 0 and mine > 0):
                raise HfCompressError(f"latency of {key} must be > 0 s, got base {base!r}, candidate {mine!r}")
            self.cache[key] = {"latency_ms": 1e3 * mine, "base_latency_ms": 1e3 * base, "speedup": base / mine}
            logger.info("latency %s: %.1f ms vs base %.1f ms (%.2f×)", key, 1e3 * mine, 1e3 * base, base / mine)
        return dict(self.cache[key])
