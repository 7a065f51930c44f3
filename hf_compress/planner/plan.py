"""A :class:`Plan`: the chosen stages, their predicted and measured numbers, the explored frontier, and the
recipe that reproduces it; plus the log of measured candidates that makes a search resumable."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HfCompressError
from .targets import Target

__all__ = ["Plan", "SearchLog", "frontier", "format_frontier"]


@dataclass
class Plan:
    target: Target
    candidate: dict  # the chosen Candidate as a dict (layers, heads, ffn, int8)
    stages: list[tuple[str, dict]]  # in the registry's vocabulary, dropped layers named explicitly
    met: bool  # whether the chosen candidate meets the target (and --max-drop) on its numbers
    message: str  # one line: what was chosen, or by how much the best found misses
    predicted: dict  # size (exact), latency (measured on its shape), proxy, healed quality
    rows: list[dict] = field(default_factory=list)  # every explored candidate
    notes: list[str] = field(default_factory=list)
    task: str = "feature-extraction"
    seed: int = 0
    max_length: int = 128
    seconds: float = 0.0
    measured: dict = field(default_factory=dict)  # filled by whoever runs the plan (the real model's numbers)

    def to_recipe(self, model, output_dir: str, data=None, evaluate=None, eval_samples: int = 128) -> dict:
        """Recipe YAML as plain data (``hf_compress.recipe.schema.parse_recipe`` accepts it):
        ``hf-compress run`` of it rebuilds the planned model."""
        if evaluate is None:
            evaluate = ["size", "latency", "teacher_agreement"]
            if self.task == "causal-lm":
                evaluate.append("perplexity")
        return {
            "version": 1,
            "model": copy.deepcopy(model),
            "task": self.task,
            "output_dir": str(output_dir),
            "data": copy.deepcopy(data),
            "stages": [{name: copy.deepcopy(fields)} for name, fields in self.stages],
            "evaluate": list(evaluate),
            "eval_samples": eval_samples,
            "eval_max_length": self.max_length,
            "seed": self.seed,
        }

    def to_dict(self) -> dict:
        return {
            "target": str(self.target),
            "met": self.met,
            "message": self.message,
            "candidate": self.candidate,
            "stages": [{n: f} for n, f in self.stages],
            "predicted": self.predicted,
            "measured": self.measured,
            "notes": self.notes,
            "seconds": round(self.seconds, 1),
            "frontier": frontier(self.rows, self.target),
            "explored": len(self.rows),
        }


def frontier(rows: list[dict], target: Target) -> list[dict]:
    """The rows no other row beats on both the target's axis and the quality proxy (lower is better),
    sorted along the target's axis; rows without a proxy are left out."""
    scored = [r for r in rows if r.get("proxy") is not None and target.metric in r]
    out = []
    for r in scored:
        g, p = target.goodness(r), r["proxy"]
        if not any((target.goodness(o) >= g and o["proxy"] <= p) and (target.goodness(o) > g or o["proxy"] < p)
                   for o in scored):
            out.append(r)
    return sorted(out, key=lambda r: -target.goodness(r))


def _fmt(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, spec)


def format_frontier(rows: list[dict], target: Target, chosen: str | None = None) -> str:
    """Markdown table of the frontier (and the chosen row): shape, size, latency, proxy, healed quality."""
    shown = frontier(rows, target)
    if chosen and all(r["key"] != chosen for r in shown):
        shown += [r for r in rows if r["key"] == chosen]
    lines = [
        "| candidate | stages | params (of base) | MiB | latency ms | speed-up | KL proxy | healed quality "
        f"| meets {target} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in shown:
        mark = " **(chosen)**" if r["key"] == chosen else ""
        lines.append(
            f"| {r['key']}{mark} | {r.get('summary', '')} | {_fmt(r.get('params_ratio'), '.3f')} | "
            f"{_fmt(r.get('mib'), '.1f')} | {_fmt(r.get('latency_ms'), '.1f')} | {_fmt(r.get('speedup'), '.2f')} | "
            f"{_fmt(r.get('proxy'), '.4f')} | {_fmt(r.get('quality'), '.4f')} | {'yes' if r.get('meets') else 'no'} |"
        )
    return "\n".join(lines)


class SearchLog:
    """Append-only JSON-lines log of what was measured: a ``header`` (what the numbers depend on), ``size``
    lines (or why a candidate cannot be built), shape ``latency`` lines, ``candidate`` lines (proxy) and
    ``healed`` lines. A search started with the same
    log file reads them back and measures only what is missing."""

    def __init__(self, path: str | Path | None, fingerprint: dict):
        self.path = Path(path) if path is not None else None
        self.sizes: dict[str, dict] = {}
        self.latency: dict[str, dict] = {}
        self.candidates: dict[str, dict] = {}
        self.healed: dict[str, dict] = {}
        if self.path is None:
            return
        if self.path.is_file() and self.path.stat().st_size:
            self._read(fingerprint)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"kind": "header", **fingerprint})

    def _read(self, fingerprint: dict) -> None:
        lines = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        header = {k: v for k, v in lines[0].items() if k != "kind"} if lines else {}
        if lines[0].get("kind") != "header" or header != json.loads(json.dumps(fingerprint)):
            raise HfCompressError(
                f"log {str(self.path)!r} was written for another model, data or settings "
                f"({header}); pass another --log or delete it"
            )
        for line in lines[1:]:
            table = {"size": self.sizes, "latency": self.latency, "candidate": self.candidates,
                     "healed": self.healed}[line["kind"]]
            table[line["key"]] = line["value"]

    def _append(self, line: dict) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(line, default=float) + "\n")

    def put(self, kind: str, key: str, value: dict) -> None:
        getattr(self, {"candidate": "candidates", "size": "sizes"}.get(kind, kind))[key] = value
        self._append({"kind": kind, "key": key, "value": value})
