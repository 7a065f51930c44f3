"""Fitted candidates: along depth and FFN width, the least compression that meets the target.

The space's grid is coarse on purpose (30 layers: keep 30, 22, 15, 10 or 8), so its closest point to a
target can sit far past it: against ``params=0.75`` on SmolLM2 the nearest depth-only point keeps 15 of 30
layers (0.61 of the parameters) where 20 layers (0.74) meet it. Compression past the target only costs
quality, so the planner adds, between two sized grid points of one group (every other axis fixed) that
straddle the target, the candidate that meets it with the least compression:

* **depth**: size is affine in the number of kept layers (the blocks are identical), so the largest layer
  count meeting a ``params`` / ``mib`` target follows from the two points, and is then sized exactly (and
  stepped down while it misses). A ``speedup`` target is fitted on the projections' parameters, which latency
  mostly follows (the estimate :mod:`.phases` ranks shapes by); the fitted shape is then measured like any
  other, one layer more compressed as well, since the estimate can be a little off.
* **FFN width**: the same on the fraction of neurons pruned, on a grid of 1/64.

``latency-ms`` targets are not fitted (the base latency is only known after the sizes). The space's
``"fit": False`` turns fitting off.
"""

from __future__ import annotations

import math

from .space import Candidate
from .targets import Target

__all__ = ["fit_candidates", "FFN_STEP"]

FFN_STEP = 1 / 64  # the grid a fitted FFN fraction is rounded up to
TRIES = 3  # exact sizings of a fitted size-target point before giving up on its group


def _metric(target: Target):
    """``(row -> value that must be <= bound, bound)`` for the target, or None when it cannot be fitted."""
    if target.key in ("params", "mib"):
        return (lambda r: r.get(target.metric)), target.value
    return None


def _straddles(points, metric, bound):
    """Adjacent ``(a, b)`` of ``points`` (sorted from least to most compressed) with ``a`` missing the bound
    and ``b`` meeting it."""
    for a, b in zip(points, points[1:]):
        va, vb = metric(a[1]), metric(b[1])
        if va is not None and vb is not None and va > bound >= vb and va > vb:
            yield a, b, va, vb


def fit_candidates(live: list[Candidate], rows: dict, target: Target, base_layers: int, size,
                   speed_bound: float | None = None) -> list[Candidate]:
    """New candidates (sized through ``size(cand) -> row or None``) meeting ``target`` with the least
    compression along depth and FFN width between the grid points of ``live``; ``speed_bound`` is the
    projections' parameters a ``speedup`` target allows (the base's divided by the speed-up)."""
    if target.key == "speedup" and speed_bound is not None:
        metric, bound, exact = (lambda r: r.get("linear_params")), speed_bound, False
    elif _metric(target) is not None:
        (metric, bound), exact = _metric(target), True
    else:
        return []
    known = {c.key for c in live}
    out: list[Candidate] = []

    def add(cand: Candidate) -> dict | None:
        if cand.key in known:
            return rows.get(cand.key)
        row = size(cand)
        if row is None:
            return None
        known.add(cand.key)
        out.append(cand)
        return row

    groups: dict[tuple, list] = {}
    for cand in live:
        groups.setdefault(("depth", cand.heads, cand.ffn, cand.int8), []).append((cand.layers, rows[cand.key], cand))
        groups.setdefault(("ffn", cand.layers, cand.heads, cand.int8), []).append((cand.ffn, rows[cand.key], cand))
    for key in sorted(groups, key=str):
        axis = key[0]
        points = sorted(groups[key], key=lambda p: -p[0] if axis == "depth" else p[0])
        for (xa, _, ca), (xb, _, _), va, vb in _straddles(points, metric, bound):
            share = (va - bound) / (va - vb)  # of the way from a to b where the bound is crossed
            if axis == "depth":
                first = math.floor(xa - share * (xa - xb) + 1e-9)  # the most layers whose fitted size meets it
                if first >= xa:
                    first = xa - 1
                steps = [first - i for i in range(TRIES if exact else 2)]
                trial = [Candidate(n, ca.heads, ca.ffn, ca.int8) for n in steps if xb < n < xa]
            else:
                first = math.ceil((xa + share * (xb - xa)) / FFN_STEP - 1e-9) * FFN_STEP
                steps = [round(first + i * FFN_STEP, 6) for i in range(TRIES if exact else 2)]
                trial = [Candidate(ca.layers, ca.heads, f, ca.int8) for f in steps if xa < f < xb]
            for cand in trial:
                row = add(cand)
                if row is None or not exact:
                    continue
                value = metric(row)
                if value is not None and value <= bound:
                    break  # the least compressed point of this group meeting the target
    return out
