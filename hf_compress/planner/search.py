"""``plan_compression``: search depth × width × heads × int8 under a budget, through the registry only.

    >>> plan = plan_compression(model, texts, tokenizer=tok, target="speedup=4", task="feature-extraction")
    >>> plan.stages, plan.predicted["speedup"], plan.met

1. size of every candidate, exactly, on random weights of its shape (:mod:`.cost`);
2. latency of the shapes a speed target needs, measured side by side with the base and cached per shape
   (an int8 mode measured slower than float on the base shape, or a shape that even with the best int8 gain
   seen cannot reach the target, is not measured);
3. the KL proxy (:mod:`.quality`) of every candidate that meets the target, after surgery, no training;
4. a short distillation of the ``top_k`` by proxy, then their quality on held-out texts;
5. the pick: the best healed quality meeting the target, or with ``max_drop`` the fastest / smallest within
   the drop. When nothing meets the target the best found is returned with ``met=False`` and the miss.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections import OrderedDict

import torch
from tqdm.auto import tqdm

from .. import arch
from ..core.registry import methods
from ..errors import HfCompressError
from ..core.context import StageContext
from .cost import CostModel, run_stages
from .plan import Plan, SearchLog
from .quality import proxy_loss, quality_score
from .search_steps import final_stages, heal_fields, pick, summary
from .space import Candidate, build_space
from .targets import Target, parse_target

__all__ = ["plan_compression"]

logger = logging.getLogger(__name__)
_FAILS = (ValueError, RuntimeError, NotImplementedError, TypeError)


def _fingerprint(model, texts, **settings) -> dict:
    config = json.dumps(model.config.to_dict(), sort_keys=True, default=str)
    weights = sum(float(p.detach().double().sum()) for p in model.parameters())
    return {
        "config": hashlib.sha256(config.encode()).hexdigest()[:16],
        "weights_sum": round(weights, 6),
        "texts": hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16],
        **json.loads(json.dumps(settings, default=str)),
    }


def _check(target, calibration, max_drop, top_k, heal_steps, distill_steps, minutes) -> Target:
    target = parse_target(target) if isinstance(target, str) else target
    if not isinstance(target, Target):
        raise HfCompressError(f"`target` must be a Target or a string like 'speedup=4', got {target!r}")
    if not calibration or not all(isinstance(t, str) for t in calibration):
        raise HfCompressError(f"`calibration` must be a non-empty list of texts, got {type(calibration).__name__}")
    if max_drop is not None and not (isinstance(max_drop, (int, float)) and 0 <= max_drop < 1):
        raise HfCompressError(f"`max_drop` must be a quality drop in [0, 1), got {max_drop!r}")
    for name, value, low in (("top_k", top_k, 1), ("heal_steps", heal_steps, 0), ("distill_steps", distill_steps, 0)):
        if not isinstance(value, int) or value < low:
            raise HfCompressError(f"`{name}` must be an integer >= {low}, got {value!r}")
    if minutes is not None and not (isinstance(minutes, (int, float)) and math.isfinite(minutes) and minutes > 0):
        raise HfCompressError(f"`minutes` must be > 0, got {minutes!r}")
    return target


class _Structures:
    """Real surgery (importance on the calibration texts) of candidate structures, by stage prefix, so that
    e.g. the model with 2 layers dropped is computed once for every heads / int8 variant of it."""

    def __init__(self, ctx: StageContext, base_layers: int, size: int = 6):
        self.ctx, self.base_layers, self.size = ctx, base_layers, size
        self._cache: OrderedDict = OrderedDict()  # stage prefix -> (model, records)

    def get(self, cand: Candidate):
        stages = cand.structural_stages(self.base_layers)
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
            records = records + run_stages(ctx, [stages[n]])
            model = ctx.model
            self._cache[json.dumps(stages[: n + 1], sort_keys=True)] = (model, records)
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return model, records

    def with_int8(self, cand: Candidate, model):
        stage = cand.int8_stage(compile=False)  # compiling changes speed, not the numbers scored here
        if stage is None:
            return model
        ctx = copy.copy(self.ctx)
        ctx.model, ctx.records = copy.deepcopy(model), []
        run_stages(ctx, [stage])
        return ctx.model


def plan_compression(model, calibration: list[str], *, tokenizer, target, task: str = "feature-extraction",
                     teacher=None, heldout: list[str] | None = None, space: dict | None = None,
                     max_drop: float | None = None, top_k: int = 3, heal_steps: int = 20,
                     distill_steps: int = 100, distill: dict | None = None, minutes: float | None = None,
                     log=None, latency_fn=None, seed: int = 0, batch_size: int = 8, max_length: int = 128,
                     proxy_batches: int = 4, eval_texts: int = 64, max_scored: int | None = 24,
                     progress: bool = True) -> Plan:
    """Search a compression plan for ``model`` meeting ``target`` (``"speedup=4"``, ``"params=0.6"``,
    ``"mib=40"``, ``"latency-ms=30"``). ``teacher`` is the quality reference (default: ``model`` as given);
    ``heldout`` texts score the healed candidates (default: every 10th calibration text); ``log`` a JSON-lines
    file of measured candidates that a second call resumes from; ``latency_fn(models, inputs) -> seconds``
    replaces the side-by-side timer (tests); ``max_scored`` caps the candidates meeting the target that get a
    proxy (the closest to the target first; all of them with ``max_drop``). The model is not changed."""
    target = _check(target, calibration, max_drop, top_k, heal_steps, distill_steps, minutes)
    reference = teacher if teacher is not None else model
    flags = [p.requires_grad for p in reference.parameters()]  # a heal freezes its teacher: restored after
    try:
        return _plan(model, calibration, tokenizer, target, task, teacher, heldout, space, max_drop, top_k,
                     heal_steps, distill_steps, distill, minutes, log, latency_fn, seed, batch_size, max_length,
                     proxy_batches, eval_texts, max_scored, progress)
    finally:
        for p, flag in zip(reference.parameters(), flags):
            p.requires_grad_(flag)


def _plan(model, calibration, tokenizer, target, task, teacher, heldout, space, max_drop, top_k, heal_steps,
          distill_steps, distill, minutes, log, latency_fn, seed, batch_size, max_length, proxy_batches,
          eval_texts, max_scored, progress) -> Plan:
    from ..evaluation import tokenize_batches

    start = time.perf_counter()
    deadline = start + 60 * minutes if minutes else math.inf
    model.eval()
    original = teacher if teacher is not None else model
    base_layers = arch.num_layers(model)
    table = methods()
    cands, notes = build_space(base_layers, set(table), target, space)
    ctx = StageContext(model=model, teacher=original, tokenizer=tokenizer, texts=list(calibration), task=task,
                      seed=seed, batch_size=batch_size, max_length=max_length)
    scoring = list(heldout) if heldout else list(calibration[::10])
    score_batches = tokenize_batches(tokenizer, scoring[:eval_texts], batch_size=16, max_length=max_length)
    proxy_data = ctx.batches(proxy_batches)
    fields = heal_fields(task, max_length, distill)
    slog = SearchLog(log, _fingerprint(model, calibration, seed=seed, max_length=max_length, heal=heal_steps,
                                       distill=fields, batch_size=batch_size, proxy_batches=proxy_batches))
    torch.manual_seed(seed)
    cost = CostModel(ctx, base_layers, score_batches[0], latency_fn, cache=dict(slog.latency))
    rows: dict[str, dict] = {}

    def latency(cand):
        if cand.shape_key not in slog.latency:
            slog.put("latency", cand.shape_key, cost.latency(cand))
        rows[cand.key].update(slog.latency[cand.shape_key], latency_source="measured")

    for cand in tqdm(cands, desc="auto: size of every candidate", disable=not progress, leave=False):
        row = rows[cand.key] = {"key": cand.key, "summary": summary(cand, base_layers), **cand.to_dict()}
        try:
            row.update(cost.size(cand))
        except _FAILS as exc:
            row["status"] = f"cannot be built: {str(exc).splitlines()[0]}"
            logger.debug("auto: %s %s", cand.key, row["status"])
    for reason in sorted({r["status"] for r in rows.values() if "status" in r}):
        count = sum(1 for r in rows.values() if r.get("status") == reason)
        notes.append(f"{count} candidates {reason}")
    live = [c for c in cands if "status" not in rows[c.key]]
    if target.is_speed:
        live = _speed_phase(live, rows, latency, target, base_layers, notes, deadline, max_drop, progress,
                            logged=lambda c: c.shape_key in slog.latency)
    for cand in live:
        rows[cand.key]["meets"] = target.meets(rows[cand.key])
    meeting = [c for c in live if rows[c.key]["meets"]]
    in_play = meeting or sorted(live, key=lambda c: -target.goodness(rows[c.key]))[:top_k]
    in_play = sorted(in_play, key=lambda c: (target.goodness(rows[c.key]), c.order))  # least compressed first
    if max_scored is not None and max_drop is None and len(in_play) > max_scored:
        for cand in in_play[max_scored:]:
            rows[cand.key]["status"] = "not scored (further past the target than the closest ones)"
        notes.append(f"{len(in_play) - max_scored} of {len(in_play)} candidates meeting {target} were not scored: "
                     f"the {max_scored} closest to the target were (compression past the target costs quality)")
        in_play = in_play[:max_scored]
    structures = _Structures(ctx, base_layers)
    bar = tqdm(in_play, desc="auto: KL proxy after surgery", disable=not progress)
    for cand in bar:
        row = rows[cand.key]
        if cand.key in slog.candidates:
            row.update(slog.candidates[cand.key])
        elif time.perf_counter() > deadline:
            row["status"] = "not scored (time budget)"
            continue
        else:
            try:
                structural, records = structures.get(cand)
                value = proxy_loss(original, structures.with_int8(cand, structural), proxy_data, task)
                dropped = next((r["dropped"] for r in records if r["stage"] == "drop_layers"), None)
                slog.put("candidate", cand.key, {"proxy": value, "dropped": dropped})
                row.update(slog.candidates[cand.key])
            except _FAILS as exc:
                row["status"] = f"surgery failed: {str(exc).splitlines()[0]}"
                continue
        scored = [rows[c.key] for c in in_play if rows[c.key].get("proxy") is not None]
        best = min(scored, key=lambda r: r["proxy"])
        bar.set_postfix(best=f"{best['key']} KL {best['proxy']:.4g}")
    scored = sorted((c for c in in_play if rows[c.key].get("proxy") is not None),
                    key=lambda c: (rows[c.key]["proxy"], c.order))
    if not scored:
        raise HfCompressError(f"no candidate could be scored for target {target}: " +
                              "; ".join(sorted({r.get('status', '') for r in rows.values()}))[:300])
    shortlist = scored[:top_k]
    healed: dict[tuple, object] = {}
    for cand in tqdm(shortlist, desc=f"auto: heal top {len(shortlist)} ({heal_steps} steps)", disable=not progress):
        row = rows[cand.key]
        if cand.key not in slog.healed:
            if cand.structure not in healed:
                structural, _ = structures.get(cand)
                hctx = copy.copy(ctx)
                hctx.model, hctx.records = copy.deepcopy(structural).requires_grad_(True), []
                if heal_steps and cand.structural_stages(base_layers) and "distill" in table:
                    run_stages(hctx, [("distill", dict(fields, max_steps=heal_steps))])
                healed[cand.structure] = hctx.model
            q = quality_score(original, structures.with_int8(cand, healed[cand.structure]), score_batches, task)
            slog.put("healed", cand.key, {"quality": q})
        row.update(slog.healed[cand.key])
        if row.get("latency_source") != "measured":  # an int8 estimate is measured on its own shape now
            latency(cand)
            row["meets"] = target.meets(row)
    chosen, met, message = pick([rows[c.key] for c in shortlist], [rows[c.key] for c in live], target, max_drop)
    cand = Candidate(chosen["layers"], chosen["heads"], chosen["ffn"], chosen["int8"])
    if chosen.get("latency_source") != "measured":
        latency(cand)
    unvisited = sum(1 for r in rows.values() if str(r.get("status", "")).endswith("(time budget)"))
    if unvisited:
        notes.append(f"{unvisited} candidates were not measured within the {minutes:g}-minute budget")
    return Plan(
        target=target, candidate=cand.to_dict(), met=met, message=message,
        stages=final_stages(cand, base_layers, chosen.get("dropped"), fields, distill_steps, set(table)),
        predicted={k: chosen.get(k) for k in ("params", "params_ratio", "bytes", "mib", "latency_ms",
                                              "base_latency_ms", "speedup", "proxy", "quality")},
        rows=list(rows.values()), notes=notes, task=task, seed=seed, max_length=max_length,
        seconds=time.perf_counter() - start,
    )


def _speed_phase(live, rows, latency, target, base_layers, notes, deadline, max_drop, progress, logged):
    """Latency of every float shape, measured; of an int8 candidate, estimated as its float shape's times the
    int8 gain measured on the base shape (compiling every int8 shape would cost minutes each), and measured
    on its own shape once it is shortlisted. Returns the candidates still in the search."""
    modes = sorted({c.int8 for c in live if c.int8 is not None})
    gains = {}
    for mode in modes:  # int8 gain on the base shape decides whether the mode is worth measuring at all
        ref, probe = Candidate(base_layers), Candidate(base_layers, int8=mode)
        if ref.key in rows and probe.key in rows and "status" not in rows[probe.key]:
            latency(ref), latency(probe)
            gains[mode] = rows[probe.key]["speedup"] / rows[ref.key]["speedup"]
            if gains[mode] <= 1.0:
                notes.append(f"int8 {mode} measured {gains[mode]:.2f}× the float model on the base shape: no "
                             f"speed on this machine, left out for a speed target")
    if gains:
        notes.append("int8 latency of a candidate not shortlisted is its float shape's divided by the gain on "
                     "the base shape (" + ", ".join(f"{m} {g:.2f}×" for m, g in gains.items()) + "); shortlisted "
                     "ones are measured on their own shape")
    live = [c for c in live if c.int8 is None or gains.get(c.int8, 0.0) > 1.0]
    for cand in tqdm([c for c in live if c.int8 is None], desc="auto: latency of candidate shapes",
                     disable=not progress, leave=False):
        if time.perf_counter() > deadline and not logged(cand):  # a resumed search still reads its log
            rows[cand.key]["status"] = "not measured (time budget)"
            continue
        latency(cand)
    for cand in (c for c in live if c.int8 is not None):
        row, fp32 = rows[cand.key], rows.get(Candidate(cand.layers, cand.heads, cand.ffn).key, {})
        if "speedup" not in fp32:
            row["status"] = "not measured (its float shape was not)"
        elif target.meets(fp32) and max_drop is None:
            row["status"] = "not scored (its float shape meets the target; int8 would only cost quality)"
        elif row.get("latency_source") != "measured":
            gain = gains[cand.int8]
            row.update(speedup=fp32["speedup"] * gain, latency_ms=fp32["latency_ms"] / gain,
                       base_latency_ms=fp32["base_latency_ms"], latency_source="estimated")
    return [c for c in live if "speedup" in rows[c.key] and "status" not in rows[c.key]]
