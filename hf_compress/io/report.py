"""``report.png``: size, CPU latency and quality of the base model and after each stage, side by side."""

from __future__ import annotations

import os

__all__ = ["plot_report"]


def plot_report(
    rows: list[dict], path: str | os.PathLike, quality_key: str | None = None, title: str = ""
) -> None:
    """Three bar panels (MiB in memory, latency in ms, quality) for ``rows`` in order (base first).

    Each row has ``model`` and optional ``mem_bytes``, ``latency_ms`` and ``quality_key`` values; a missing
    value leaves its bar out. Uses the non-interactive Agg backend (no display needed).
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    names = [r["model"] for r in rows]
    panels = [("mem_bytes", "weights in memory (MiB)", 1 / 2**20), ("latency_ms", "CPU latency (ms)", 1.0)]
    if quality_key:
        panels.append((quality_key, quality_key.replace("_", " "), 1.0))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (key, label, scale) in zip(axes[0], panels):
        xs = [i for i, r in enumerate(rows) if r.get(key) is not None]
        ax.bar(xs, [rows[i][key] * scale for i in xs], color=["#888888"] + ["#3b75af"] * (len(xs) - 1))
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
