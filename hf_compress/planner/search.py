"""``plan_compression``: search depth × width × heads × int8 under a budget, through the registry only.

    >>> plan = plan_compression(model, texts, tokenizer=tok, target="speedup=4", task="feature-extraction")
    >>> plan.stages, plan.predicted["speedup"], plan.met

1. size of every candidate, exactly, from its float shape on random weights (int8 by its byte rule; :mod:`.cost`),
   then the fitted candidates between grid points that straddle the target (:mod:`.refine`);
2. latency of the shapes a speed target needs, measured side by side with the base and cached per shape
   (an int8 mode measured slower than float on the base shape is left out; int8 shapes are estimated from
   their float shape until shortlisted); 1 and 2 stop at 55% of ``minutes``, except for the base shape and
   the smallest ones (:mod:`.phases`);
3. (until 90% of ``minutes``) the KL proxy (:mod:`.quality`) of every candidate that meets the target, after surgery, no training;
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

import torch
from tqdm.auto import tqdm

from .. import arch
from ..core.registry import methods
from ..errors import HfCompressError
from ..core.context import StageContext
from . import phases
from .cost import CostModel, run_stages
from .phases import FAILS, size_one, size_phase, speed_phase
from .plan import Plan, SearchLog
from .quality import ReferenceOutputs, proxy_loss, quality_score
from .refine import fit_candidates
from .search_steps import best_sized, final_stages, heal_fields, pick, summary
from .shapes import PrefixCache
from .space import DEFAULT_SPACE, Candidate, build_space
from .targets import Target, parse_target

__all__ = ["plan_compression"]

logger = logging.getLogger(__name__)


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
    from ..evaluation import model_bytes, tokenize_batches

    start = phases.clock()
    deadline = phases.deadlines(start, minutes)
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

    for cand in cands:
        rows[cand.key] = {"key": cand.key, "summary": summary(cand, base_layers), **cand.to_dict()}
    live = size_phase(cands, rows, cost, base_layers, deadline["measure"], notes, progress, slog)
    if {**DEFAULT_SPACE, **(space or {})}.get("fit", True):
        live += _fitted(live, rows, cost, target, base_layers, slog, notes)
    if target.is_speed:
        live = speed_phase(live, rows, latency, target, base_layers, notes, deadline["measure"], max_drop, progress,
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
    structures = PrefixCache(ctx)
    reference = ReferenceOutputs(original, proxy_data, task)  # the original's side, once for every candidate
    bar = tqdm(in_play, desc="auto: KL proxy after surgery", disable=not progress)
    for cand in bar:
        row = rows[cand.key]
        if cand.key in slog.candidates:
            row.update(slog.candidates[cand.key])
        elif phases.clock() > deadline["proxy"]:
            row["status"] = "not scored (time budget)"
            continue
        else:
            try:
                structural, records = structures.get(cand.structural_stages(base_layers))
                built = structures.then(structural, cand.int8_stage(compile=False))
                value = proxy_loss(reference, built, proxy_data, task)
                dropped = next((r["dropped"] for r in records if r["stage"] == "drop_layers"), None)
                found = {"proxy": value, "dropped": dropped}
                if row.get("bytes_exact") is False:  # the float fallback is chosen now: its bytes are known
                    found["bytes"] = model_bytes(built)
                slog.put("candidate", cand.key, found)
                row.update(slog.candidates[cand.key])
            except FAILS as exc:
                row["status"] = f"surgery failed: {str(exc).splitlines()[0]}"
                continue
        if "bytes" in slog.candidates.get(cand.key, {}):  # counted on the built model (float fallback chosen)
            row.update(mib=row["bytes"] / 2**20, bytes_exact=True)
            row.pop("bytes_low", None)
        scored = [rows[c.key] for c in in_play if rows[c.key].get("proxy") is not None]
        best = min(scored, key=lambda r: r["proxy"])
        bar.set_postfix(best=f"{best['key']} KL {best['proxy']:.4g}")
    scored = sorted((c for c in in_play if rows[c.key].get("proxy") is not None),
                    key=lambda c: (rows[c.key]["proxy"], c.order))
    if not scored:  # out of time (or every surgery failed): the best-sized candidate, marked not measured
        chosen, message = best_sized([rows[c.key] for c in (in_play or live)], list(rows.values()), target,
                                     minutes)
        return _result(chosen, False, message, target, base_layers, fields, distill_steps, table, rows, notes,
                       task, seed, max_length, start, minutes)
    shortlist = scored[:top_k]
    healed: dict[tuple, object] = {}
    for cand in tqdm(shortlist, desc=f"auto: heal top {len(shortlist)} ({heal_steps} steps)", disable=not progress):
        row = rows[cand.key]
        if cand.key not in slog.healed:
            if cand.structure not in healed:
                structural, _ = structures.get(cand.structural_stages(base_layers))
                hctx = copy.copy(ctx)
                hctx.model, hctx.records = copy.deepcopy(structural).requires_grad_(True), []
                if heal_steps and cand.structural_stages(base_layers) and "distill" in table:
                    run_stages(hctx, [("distill", dict(fields, max_steps=heal_steps))])
                healed[cand.structure] = hctx.model
            q = quality_score(original, structures.then(healed[cand.structure], cand.int8_stage(compile=False)),
                              score_batches, task)
            slog.put("healed", cand.key, {"quality": q})
        row.update(slog.healed[cand.key])
        if row.get("latency_source") != "measured":  # an int8 estimate is measured on its own shape now
            latency(cand)
            row["meets"] = target.meets(row)
    chosen, met, message = pick([rows[c.key] for c in shortlist], [rows[c.key] for c in live], target, max_drop)
    if chosen.get("latency_source") != "measured":
        latency(Candidate(chosen["layers"], chosen["heads"], chosen["ffn"], chosen["int8"]))
    return _result(chosen, met, message, target, base_layers, fields, distill_steps, table, rows, notes, task,
                   seed, max_length, start, minutes)


def _fitted(live, rows, cost, target, base_layers, slog, notes) -> list[Candidate]:
    """The fitted candidates of :mod:`.refine` (between grid points that straddle the target), sized."""
    def sized(cand):
        rows[cand.key] = {"key": cand.key, "summary": summary(cand, base_layers), **cand.to_dict()}
        size_one(cand, rows[cand.key], cost, slog)
        return None if "status" in rows[cand.key] else rows[cand.key]

    base = rows.get(Candidate(base_layers).key, {})
    bound = base["linear_params"] / target.value if target.key == "speedup" and "linear_params" in base else None
    fitted = fit_candidates(live, rows, target, base_layers, sized, speed_bound=bound)
    if fitted:
        notes.append(f"{len(fitted)} candidates fitted between grid points that straddle {target} (the least "
                     f"compression along depth or FFN width meeting it): " + ", ".join(c.key for c in fitted[:8])
                     + (" …" if len(fitted) > 8 else ""))
    return [c for c in fitted if "status" not in rows[c.key]]


def _result(chosen, met, message, target, base_layers, fields, distill_steps, table, rows, notes, task, seed,
            max_length, start, minutes) -> Plan:
    cand = Candidate(chosen["layers"], chosen["heads"], chosen["ffn"], chosen["int8"])
    unvisited = sum(1 for r in rows.values() if str(r.get("status", "")).endswith("(time budget)"))
    if unvisited:
        notes.append(f"{unvisited} candidates were not measured within the {minutes:g}-minute budget")
    return Plan(
        target=target, candidate=cand.to_dict(), met=met, message=message,
        stages=final_stages(cand, base_layers, chosen.get("dropped"), fields, distill_steps, set(table)),
        predicted={k: chosen.get(k) for k in ("params", "params_ratio", "bytes", "mib", "latency_ms",
                                              "base_latency_ms", "speedup", "proxy", "quality", "status")
                   if k != "status" or k in chosen},
        rows=list(rows.values()), notes=notes, task=task, seed=seed, max_length=max_length,
        seconds=phases.clock() - start,
    )
