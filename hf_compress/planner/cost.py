"""The cost model: parameters and bytes exactly, latency measured on this machine, per candidate shape.

A candidate's shape is built from **random weights** of the base's configuration, shrunk by the same stages
the candidate runs (through the registry: dropped layers named explicitly, heads pruned at random), so its
cost is known before any importance score or training; its latency is measured side by side with a random
base of the same configuration (interleaved in one process, as every latency here) and cached per shape.
"""

from __future__ import annotations

import copy
import logging
import torch

from ..core.context import StageContext
from ..core.registry import get_method
from ..errors import HfCompressError
from .space import Candidate

__all__ = ["run_stages", "CostModel", "LatencyFn"]

logger = logging.getLogger(__name__)

LatencyFn = object  # (models: dict[str, Module], inputs: dict) -> dict[str, seconds]


def stage_config(name: str, fields: dict):
    """The registered config of stage ``name`` built from ``fields`` (its own checks run)."""
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


def random_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A model of ``model``'s class and configuration with fresh random weights (fp32, eval)."""
    torch.manual_seed(seed)
    return type(model)(copy.deepcopy(model.config)).eval()


class CostModel:
    """Exact size and measured latency of candidate shapes; ``cache`` (shape key -> numbers) is what the
    planner's log saves, so a resumed search measures no shape twice."""

    def __init__(self, base_ctx: StageContext, base_layers: int, latency_inputs: dict, latency_fn=None,
                 cache: dict | None = None, repeats: int = 5):
        from ..evaluation import param_count

        self.ctx = base_ctx
        self.base_layers = base_layers
        self.inputs = latency_inputs
        self.latency_fn = latency_fn or self._measure
        self.cache: dict[str, dict] = cache if cache is not None else {}
        self.repeats = repeats
        self._base = random_like(base_ctx.model, base_ctx.seed)
        self.base_params = param_count(base_ctx.model)
        self._sizes: dict[str, dict] = {}

    def _measure(self, models: dict, inputs: dict) -> dict:
        from ..evaluation import latency_side_by_side

        with torch.inference_mode():
            return latency_side_by_side(models, inputs, repeats=self.repeats, warmup=2)

    def shape_model(self, cand: Candidate, compile: bool = True) -> torch.nn.Module:
        ctx = copy.copy(self.ctx)
        ctx.records = []
        ctx.model = copy.deepcopy(self._base)
        drop = list(range(cand.layers, self.base_layers))  # which layers does not change the shape
        cheap = {"prune_heads": {"method": "random"}, "prune_width": {"num_batches": 1}}  # scores: any will do
        stages = [(n, dict(f, **cheap.get(n, {}))) for n, f in cand.structural_stages(self.base_layers, drop)]
        int8 = cand.int8_stage(compile=compile)
        run_stages(ctx, stages + ([int8] if int8 else []))
        return ctx.model

    def size(self, cand: Candidate) -> dict:
        """``params``, ``params_ratio``, ``bytes``, ``mib`` of the candidate, exact (counted on its shape)."""
        from ..evaluation import model_bytes, param_count

        key = cand.shape_key
        if key not in self._sizes:
            model = self.shape_model(Candidate(cand.layers, cand.heads, cand.ffn, {"w8a8-sq": "w8a8"}.get(
                cand.int8, cand.int8)), compile=False)
            params, nbytes = param_count(model), model_bytes(model)
            self._sizes[key] = {"params": params, "params_ratio": params / self.base_params,
                                "bytes": nbytes, "mib": nbytes / 2**20}
        return dict(self._sizes[key])

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
