"""The small decisions of a search: the heal's distillation fields, the pick, the final stages, labels."""

from __future__ import annotations

from .space import Candidate
from .targets import Target

__all__ = ["heal_fields", "pick", "best_sized", "final_stages", "summary", "NOT_MEASURED"]

NOT_MEASURED = "not measured (no candidate could be scored within the budget)"


def heal_fields(task: str, max_length: int, distill: dict | None) -> dict:
    """Fields of the registry's ``distill`` stage (without ``max_steps``) for healing a candidate: hidden
    states for a model without logits (sentence embeddings), logits otherwise; ``distill`` overrides."""
    fields = {"batch_size": 16, "max_length": max_length, "logging_steps": 10}
    if task == "feature-extraction":
        fields.update(alpha_hidden=1.0, alpha_logits=0.0, learning_rate=2e-4)
    else:
        fields.update(learning_rate=1e-4)
    fields.update(distill or {})
    fields.pop("max_steps", None)
    return fields


def _rank(target: Target, row: dict) -> tuple:
    return (row.get("quality") or 0.0, target.goodness(row), row["key"])


def pick(shortlist: list[dict], live: list[dict], target: Target, max_drop: float | None):
    """``(row, met, message)``: the best healed quality meeting the target; with ``max_drop`` the fastest /
    smallest healed candidate within the drop; when none qualifies, the best found and by how much it misses."""
    healed = [r for r in shortlist if r.get("quality") is not None]
    meeting = [r for r in healed if r.get("meets")]
    if max_drop is not None and meeting:
        within = [r for r in meeting if 1.0 - r["quality"] <= max_drop]
        if within:
            row = max(within, key=lambda r: (target.goodness(r), r["quality"], r["key"]))
            return row, True, (f"{row['key']} meets {target} within --max-drop {max_drop:g} "
                               f"(quality {row['quality']:.4f}): the {'fastest' if target.is_speed else 'smallest'}"
                               f" of {len(within)} healed candidates within the drop")
        row = max(meeting, key=lambda r: _rank(target, r))
        return row, False, (f"no healed candidate meeting {target} stays within --max-drop {max_drop:g}: the best, "
                            f"{row['key']}, drops {1.0 - row['quality']:.4f} (misses by "
                            f"{1.0 - row['quality'] - max_drop:.4f})")
    if meeting:
        row = max(meeting, key=lambda r: _rank(target, r))
        return row, True, (f"{row['key']} meets {target} with the best healed quality {row['quality']:.4f} "
                           f"of {len(meeting)} healed candidates ({sum(1 for r in live if r.get('meets'))} met it)")
    row = max(healed or shortlist, key=lambda r: (target.goodness(r), r.get("quality") or 0.0, r["key"]))
    return row, False, (f"no candidate of {len(live)} meets {target}; best found {row['key']}: "
                        f"{target.miss(row)}")


def best_sized(candidates: list[dict], rows: list[dict], target: Target, minutes) -> tuple[dict, str]:
    """``(row, message)`` when no candidate could be scored in time: of the sized ``candidates``, the one
    closest to the target among those meeting it on their numbers, else the one furthest along the target's
    axis (for a speed target whose latencies were not measured either: the fewest parameters). The row is
    marked :data:`NOT_MEASURED`: its quality is unknown."""
    from ..errors import HfCompressError

    sized = [r for r in candidates if r.get("params") is not None]
    if not sized:
        raise HfCompressError(f"no candidate could even be sized for target {target}: " +
                              "; ".join(sorted({r.get('status', '') for r in rows}))[:300])
    meeting = [r for r in sized if target.meets(r)]
    if meeting:
        row = min(meeting, key=lambda r: (target.goodness(r), r["key"]))
    elif any(target.metric in r for r in sized):
        row = max(sized, key=lambda r: (target.goodness(r), r["key"]))
    else:
        row = min(sized, key=lambda r: (r["params"], r["key"]))
    reasons = sorted({r["status"] for r in rows if r.get("status")})
    row["status"] = NOT_MEASURED
    budget = f"within the {minutes:g}-minute budget" if minutes else "(every surgery failed)"
    numbers = target.miss(row) or f"{target.key} {row[target.metric]:.3g} on its predicted numbers" \
        if target.metric in row else f"its {target.key} was not measured either"
    return row, (f"no candidate could be scored for target {target} {budget}; wrote the best-sized candidate "
                 f"{row['key']} ({row.get('summary') or 'base'}), not measured: its quality is unknown and "
                 f"{numbers} (" + "; ".join(reasons)[:300] + ")")


def final_stages(cand: Candidate, base_layers: int, dropped, fields: dict, distill_steps: int,
                 registered: set[str]) -> list[tuple[str, dict]]:
    """The plan's stages: surgery (dropped layers named, so the recipe needs no importance run for them),
    the full distillation when the model shrank, int8 with compiled blocks last."""
    stages = cand.structural_stages(base_layers, dropped)
    if stages and distill_steps and "distill" in registered:
        stages.append(("distill", dict(fields, max_steps=distill_steps)))
    int8 = cand.int8_stage(compile=True)
    return stages + ([int8] if int8 else [])


def summary(cand: Candidate, base_layers: int) -> str:
    parts = []
    if cand.layers < base_layers:
        parts.append(f"{cand.layers}/{base_layers} layers")
    if cand.ffn:
        parts.append(f"FFN −{100 * cand.ffn:g}%")
    if cand.heads:
        parts.append(f"heads −{100 * cand.heads:g}%")
    if cand.int8:
        parts.append(cand.int8)
    return " · ".join(parts) or "base"
