"""Budgets a plan must meet: ``speedup=4``, ``params=0.6``, ``mib=40`` or ``latency-ms=30``.

    >>> target = parse_target("speedup=4")
    >>> target.meets({"speedup": 4.3})
    True

``speedup`` is the base's latency over the candidate's, measured side by side; ``params`` the fraction of the
base's parameters kept; ``mib`` the weights' bytes in MiB; ``latency-ms`` the candidate's median latency on
this machine's latency batch. Malformed or impossible targets fail here, before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import HfCompressError

__all__ = ["Target", "TargetError", "parse_target", "TARGET_KEYS"]

# key -> (metric of a candidate it reads, "min" when larger is better / "max" when smaller is better, unit)
TARGET_KEYS = {
    "speedup": ("speedup", "min", "×"),
    "params": ("params_ratio", "max", "of the base's parameters"),
    "mib": ("mib", "max", "MiB"),
    "latency-ms": ("latency_ms", "max", "ms"),
}


class TargetError(HfCompressError):
    """A ``--target`` that is malformed or can never be met."""


@dataclass(frozen=True)
class Target:
    key: str  # one of TARGET_KEYS
    value: float

    def __post_init__(self):
        if self.key not in TARGET_KEYS:
            raise TargetError(
                f"target key must be one of {', '.join(TARGET_KEYS)}, got {self.key!r} "
                f"(e.g. --target speedup=4)"
            )
        v = self.value
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TargetError(f"target {self.key} must be a finite number, got {v!r}")
        if self.key == "speedup" and v <= 1:
            raise TargetError(f"target speedup must be > 1 (a faster model), got {v!r}; e.g. speedup=2")
        if self.key == "params" and not 0 < v < 1:
            raise TargetError(
                f"target params must be a fraction of the base's parameters in (0, 1), got {v!r}; "
                f"e.g. params=0.6"
            )
        if self.key in ("mib", "latency-ms") and v <= 0:
            raise TargetError(f"target {self.key} must be > 0, got {v!r}")

    @property
    def metric(self) -> str:
        return TARGET_KEYS[self.key][0]

    @property
    def larger_is_better(self) -> bool:
        return TARGET_KEYS[self.key][1] == "min"

    @property
    def is_speed(self) -> bool:
        return self.key in ("speedup", "latency-ms")

    def meets(self, metrics: dict) -> bool:
        value = metrics.get(self.metric)
        if value is None:
            return False
        return value >= self.value if self.larger_is_better else value <= self.value

    def goodness(self, metrics: dict) -> float:
        """How far along the target's axis a candidate goes (larger = closer to / further past the target)."""
        value = metrics.get(self.metric)
        if value is None:
            return -math.inf
        return value if self.larger_is_better else -value

    def miss(self, metrics: dict) -> str:
        """``"speedup 3.20× (target ≥ 5×, misses by 36%)"``; empty when the target is met."""
        value = metrics.get(self.metric)
        if value is None:
            return f"{self.key} was not measured"
        if self.meets(metrics):
            return ""
        sign = "≥" if self.larger_is_better else "≤"
        by = abs(value - self.value) / self.value
        return f"{self.key} {value:.3g} (target {sign} {self.value:g}, misses by {100 * by:.0f}%)"

    def __str__(self) -> str:
        return f"{self.key}={self.value:g}"


def parse_target(text: str) -> Target:
    """``"speedup=4"`` -> ``Target("speedup", 4.0)``; a one-line :class:`TargetError` otherwise."""
    if not isinstance(text, str) or text.count("=") != 1:
        raise TargetError(
            f"target must be KEY=VALUE with KEY one of {', '.join(TARGET_KEYS)} (e.g. speedup=4), got {text!r}"
        )
    key, raw = (part.strip() for part in text.split("="))
    if key not in TARGET_KEYS:
        raise TargetError(f"target key must be one of {', '.join(TARGET_KEYS)}, got {key!r} in {text!r}")
    try:
        value = float(raw)
    except ValueError:
        raise TargetError(f"target {key} must be a number, got {raw!r} in {text!r}") from None
    return Target(key, value)
