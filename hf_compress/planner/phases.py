"""The measuring phases of a search, each within the time budget: the size of every candidate (exact, from
its float shape), the latency of the shapes a speed target needs, and the plan written when nothing could be
scored in time.

What is always measured, whatever the budget: the base shape and the most compressed structure are sized, and
the base shape (float and each int8 mode) and the ``ALWAYS`` smallest float shapes get a latency, so that a
search cut short still knows the two ends of the range. The other shapes are measured closest to the target
first (by the parameters of their projections, which latency mostly follows).
"""

from __future__ import annotations

import logging
import math
import time

from tqdm.auto import tqdm

from .space import INT8_MODES, Candidate
from .targets import Target

__all__ = ["size_one", "size_phase", "speed_phase", "deadlines", "ALWAYS", "FAILS", "SHARES", "clock"]

logger = logging.getLogger(__name__)
FAILS = (ValueError, RuntimeError, NotImplementedError, TypeError)
ALWAYS = 2  # the smallest float shapes measured for latency whatever the budget
clock = time.perf_counter  # tests replace it to run past a budget without waiting
# the part of --minutes by the end of which each phase stops: sizes and latencies, then the KL proxies; the
# short heal of the top few and the latency of the pick on its own shape come after (they are not cut short)
SHARES = {"measure": 0.55, "proxy": 0.9}


def deadlines(start: float, minutes: float | None) -> dict[str, float]:
    """Clock readings by which each phase of :data:`SHARES` stops (infinite without a budget)."""
    return {k: start + 60 * minutes * share if minutes else math.inf for k, share in SHARES.items()}


def size_one(cand: Candidate, row: dict, cost, slog) -> None:
    """Size ``cand`` into ``row`` through the search log ``slog`` (a surgery that fails is a ``status``)."""
    if cand.key not in slog.sizes:
        try:
            slog.put("size", cand.key, cost.size(cand))
        except FAILS as exc:
            slog.put("size", cand.key, {"status": f"cannot be built: {str(exc).splitlines()[0]}"})
            logger.debug("auto: %s %s", cand.key, slog.sizes[cand.key]["status"])
    row.update(slog.sizes[cand.key])


def size_phase(cands: list[Candidate], rows: dict, cost, base_layers: int, deadline: float, notes: list,
               progress: bool, slog) -> list[Candidate]:
    """Size every candidate (``rows[key]`` updated) until the deadline, reading and writing the search log
    ``slog``; the candidates sized."""
    smallest = min((c.structure for c in cands), key=lambda s: (s[0], -s[2], -s[1]))
    first = {(base_layers, 0.0, 0.0), smallest}
    order = sorted(cands, key=lambda c: (c.structure not in first, c.structure != (base_layers, 0.0, 0.0),
                                         -c.layers, c.ffn, c.heads, INT8_MODES.index(c.int8)))  # prefixes shared
    failed: dict[tuple, str] = {}
    for cand in tqdm(order, desc="auto: size of every candidate", disable=not progress, leave=False):
        row = rows[cand.key]
        if cand.key in slog.sizes:
            row.update(slog.sizes[cand.key])
        elif cand.structure in failed:
            row["status"] = failed[cand.structure]
        elif clock() > deadline and cand.structure not in first:
            row["status"] = "not sized (time budget)"
        else:
            size_one(cand, row, cost, slog)
        if cand.int8 is None and "status" in row and not row["status"].endswith("(time budget)"):
            failed[cand.structure] = row["status"]
    for reason in sorted({r["status"] for r in rows.values() if "status" in r}):
        count = sum(1 for r in rows.values() if r.get("status") == reason)
        notes.append(f"{count} candidates {reason}")
    return [c for c in cands if "status" not in rows[c.key]]


def _closeness(rows: dict, target: Target, base_key: str):
    """Sort key: how far a float shape's estimated speed-up (base projection parameters over its own) is
    from the target's, in log scale."""
    base = rows[base_key]
    goal = target.value if target.key == "speedup" else base.get("base_latency_ms", math.nan) / target.value

    def key(cand: Candidate):
        est = base["linear_params"] / max(rows[cand.key]["linear_params"], 1)
        return (abs(math.log(est / goal)) if goal > 0 else 0.0, cand.order)

    return key


def speed_phase(live, rows, latency, target, base_layers, notes, deadline, max_drop, progress, logged):
    """Latency of the float shapes, measured (the base and the smallest always, the rest closest to the target
    first, within the deadline); of an int8 candidate, estimated as its float shape's times the int8 gain
    measured on the base shape (compiling every int8 shape would cost minutes each), and measured on its own
    shape once it is shortlisted. Returns the candidates still in the search."""
    ref = Candidate(base_layers)
    modes = sorted({c.int8 for c in live if c.int8 is not None})
    if ref.key in rows and "status" not in rows[ref.key]:
        latency(ref)  # the base shape against a copy of itself: how far a ratio is from exact on this machine
        noise = rows[ref.key]["speedup"]
        notes.append(f"the base shape timed against itself measured {noise:.2f}× (exact: 1.00×): read every "
                     f"measured speed-up to about ±{100 * abs(noise - 1):.0f}%")
    gains = {}
    for mode in modes:  # int8 gain on the base shape decides whether the mode is worth measuring at all
        probe = Candidate(base_layers, int8=mode)
        if ref.key in rows and probe.key in rows and "status" not in rows[probe.key]:
            latency(probe)
            gains[mode] = rows[probe.key]["speedup"] / rows[ref.key]["speedup"]
            if gains[mode] <= 1.0:
                notes.append(f"int8 {mode} measured {gains[mode]:.2f}× the float model on the base shape: no "
                             f"speed on this machine, left out for a speed target")
    if gains:
        notes.append("int8 latency of a candidate not shortlisted is its float shape's divided by the gain on "
                     "the base shape (" + ", ".join(f"{m} {g:.2f}×" for m, g in gains.items()) + "); shortlisted "
                     "ones are measured on their own shape")
    live = [c for c in live if c.int8 is None or gains.get(c.int8, 0.0) > 1.0]
    floats = [c for c in live if c.int8 is None and c.key != ref.key]
    always = sorted(floats, key=lambda c: (rows[c.key]["linear_params"], c.order))[:ALWAYS]
    rest = [c for c in floats if c not in always]
    if ref.key in rows and "linear_params" in rows[ref.key]:
        rest.sort(key=_closeness(rows, target, ref.key))
    for cand in tqdm(always + rest, desc="auto: latency of candidate shapes", disable=not progress, leave=False):
        if clock() > deadline and cand not in always and not logged(cand):  # a resumed search reads its log
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
