"""``hf-compress bench``: size, CPU latency and quality of a model, optionally against a baseline model.

Both models run on the same held-out Wikipedia summaries; latency is measured side by side in one process
(interleaved, medians), quality is agreement with the baseline (embedding cosine for feature extraction).
"""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["bench", "resolve_model_path"]

logger = logging.getLogger(__name__)


def resolve_model_path(name: str) -> Path:
    """A checkpoint folder, or the folder of a bundled model asset (:data:`hf_compress.assets.MODEL_ASSETS`)."""
    from ..assets import MODEL_ASSETS, get_asset
    from ..errors import CheckpointError

    if Path(name).is_dir():
        return Path(name)
    if name in MODEL_ASSETS:
        return Path(get_asset(name))
    raise CheckpointError(
        f"model {name!r} is neither a checkpoint folder nor a bundled model asset ({', '.join(MODEL_ASSETS)})"
    )


def _task_of(path: Path, task: str | None) -> str:
    from ..io.checkpoint import read_compression_config

    if task:
        return task
    recorded = ((read_compression_config(path) or {}).get("recipe") or {}).get("task")
    if recorded:
        return recorded
    import json

    from ..tasks import task_of_architectures

    return task_of_architectures(json.loads((path / "config.json").read_text()).get("architectures"))


def bench(
    model: str,
    baseline: str | None = None,
    task: str | None = None,
    samples: int = 64,
    repeats: int = 7,
    texts_file: str | None = None,
    trust_remote_code: bool = False,
    compiled: bool = True,
) -> list[dict]:
    """Rows (baseline first when given) with params, bytes, latency, speed-up and quality, on the held-out
    Wikipedia summaries or the held-out part of ``texts_file`` (.txt/.json/.jsonl). An int8 ``model`` gets a
    second row, ``<model> (compiled)``, timed beside the eager one: ``from_pretrained`` gives eager kernels,
    ``compile_int8(model)`` the fast path (``compiled=False`` leaves it out)."""
    from transformers import AutoTokenizer

    from ..errors import HfCompressError
    from ..evaluation import checkpoint_bytes, latency_side_by_side, model_bytes, param_count, tokenize_batches, wiki_texts
    from ..io.checkpoint import load_compressed
    from ..methods.int8.compile import compile_int8
    from ..methods.int8.layer import Int8Linear
    from .measure import agreement, clip_length, quality_key

    if samples < 1 or repeats < 1:
        raise HfCompressError(f"--samples and --repeats must be >= 1, got {samples} and {repeats}")
    from ..io.folder_checks import check_model_folder

    paths = {"model": resolve_model_path(model)}
    if baseline:
        paths = {"baseline": resolve_model_path(baseline), **paths}
    for p in paths.values():
        check_model_folder(p)  # a supported family and safetensors weights, before anything is loaded
    task = _task_of(paths["model"], task)
    models = {k: load_compressed(p, task=task, trust_remote_code=trust_remote_code) for k, p in paths.items()}
    if compiled and any(isinstance(m, Int8Linear) for m in models["model"].modules()):
        fast = load_compressed(paths["model"], task=task, trust_remote_code=trust_remote_code)
        compile_int8(fast)
        models["model (compiled)"], paths["model (compiled)"] = fast, paths["model"]
    tokenizer = AutoTokenizer.from_pretrained(paths["model"])
    if texts_file:
        from .loading import load_texts
        from .schema import DataSpec

        texts = load_texts(DataSpec(name=texts_file))[1][:samples]
    else:
        texts = wiki_texts("heldout", samples)
    batches = tokenize_batches(tokenizer, texts, batch_size=16, max_length=clip_length(models["model"], 128))
    rows = []
    for key, m in models.items():
        label = str(paths[key]) + (" (compiled)" if key == "model (compiled)" else "")
        row = {"model": label, "params": param_count(m), "disk_bytes": checkpoint_bytes(paths[key]),
               "mem_bytes": model_bytes(m)}  # the keys `run --json` uses for the same quantities
        if baseline:
            row[quality_key(task)] = agreement(m, models["baseline"], task, batches)
        rows.append(row)
    lat = latency_side_by_side(models, batches[0], repeats=repeats, warmup=2)
    for row, key in zip(rows, models):
        row["latency_ms"] = 1e3 * lat[key]
    for row, key in zip(rows, models):
        if baseline and key != "baseline":
            row["speedup"] = lat["baseline"] / lat[key]
    return rows
