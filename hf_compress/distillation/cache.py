"""Teacher outputs computed once and written as a ``datasets`` Arrow folder (memory-mapped when read).

    >>> from hf_compress import cache_teacher_outputs, DistillationTrainer
    >>> cache_teacher_outputs(teacher, train_ds, "teacher-cache", top_k=32, max_length=256, tokenizer=tok)
    >>> DistillationTrainer(model=student, teacher_cache="teacher-cache", args=args, train_dataset=train_ds).train()

One row per example of ``dataset``, in order. With ``L`` its (truncated) length, ``P`` = ``L`` (token heads) or
1 (sequence classifiers) and ``d`` the teacher's width, a row holds ``input_ids`` (L, int32, to check that
training rows are the cached ones), ``topk_ids`` (P*k int32) and ``topk_logits`` (P*k fp32), sorted by logit,
``tail_logsumexp`` (P fp32: log-sum-exp of the logits outside the top k, ``-inf`` when k = V), and
``hidden_<j>`` (L*d, ``hidden_dtype``) for each cached teacher hidden-state index ``j``. The top-k probabilities
and the tail mass at tau = 1 are exact: ``log p_i = z_i - logsumexp([z_1..z_k, tail])``.

Shards of ``shard_rows`` rows are written one at a time (each atomically); a killed run continues where it
stopped when called again with the same arguments, and refuses to continue a folder written for another teacher,
tokenizer, data set, ``max_length``, ``top_k`` or hidden-state set (the fingerprint in ``META_FILE``). The folder
loads with ``datasets.load_from_disk`` only once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

import torch
from torch import nn
from tqdm.auto import tqdm

from ..arch import num_layers
from ..errors import HfCompressError
from .cache_format import (
    HIDDEN_DTYPES, META_FILE, ROW_COLUMN, check_fingerprint, encode_hidden, features_for, fingerprint,
)
from .layer_map import hidden_width
from .teacher import model_task

__all__ = ["META_FILE", "ROW_COLUMN", "cache_summary", "cache_teacher_from_folders", "cache_teacher_outputs"]

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def _check_args(teacher, dataset, output_dir, top_k, hidden_layers, max_length, batch_size, shard_rows,
                hidden_dtype):
    import datasets

    if not isinstance(teacher, nn.Module):
        raise HfCompressError(f"`teacher` must be a loaded transformers model, got {type(teacher).__name__}")
    if not isinstance(dataset, datasets.Dataset) or "input_ids" not in dataset.column_names:
        raise HfCompressError(
            f"`dataset` must be a tokenized datasets.Dataset with an input_ids column, got {type(dataset).__name__}"
            + (f" with columns {dataset.column_names}" if isinstance(dataset, datasets.Dataset) else "")
        )
    for name, value in (("batch_size", batch_size), ("shard_rows", shard_rows)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise HfCompressError(f"`{name}` must be a positive integer, got {value!r}")
    if max_length is not None and not (isinstance(max_length, int) and max_length > 0):
        raise HfCompressError(f"`max_length` must be a positive integer or None, got {max_length!r}")
    if hidden_dtype not in HIDDEN_DTYPES:
        raise HfCompressError(f"`hidden_dtype` must be one of {', '.join(HIDDEN_DTYPES)}, got {hidden_dtype!r}")
    task = model_task(teacher)
    cfg = teacher.config
    width = cfg.num_labels if task == "sequence-classification" else getattr(cfg, "vocab_size", 0)
    if task == "base":
        width = 0
    if not (isinstance(top_k, int) and not isinstance(top_k, bool) and 0 <= top_k <= width):
        raise HfCompressError(
            f"`top_k` must be an integer in [0, {width}] (the teacher's {'label count' if task == 'sequence-classification' else 'vocabulary size'}"
            f"; 0 = no logits), got {top_k!r}"
        )
    n_layers = num_layers(teacher)
    layers = sorted(set(hidden_layers or ()))
    if any(not isinstance(j, int) or not 0 <= j <= n_layers for j in layers):
        raise HfCompressError(
            f"`hidden_layers` must list hidden-state indices in 0..{n_layers} (0 = embeddings), got {hidden_layers!r}"
        )
    if top_k == 0 and not layers:
        raise HfCompressError("`top_k` is 0 and `hidden_layers` is empty: nothing to cache; set one of them")
    if os.path.isfile(output_dir) or (os.path.isdir(output_dir) and os.listdir(output_dir)
                                      and not os.path.isfile(os.path.join(output_dir, META_FILE))):
        raise HfCompressError(
            f"`output_dir` must be an empty or missing folder, or a teacher cache to continue, got {output_dir!r}"
        )
    return task, width, n_layers, layers


def _batch(rows: list[dict], max_length, pad_id: int, device) -> dict:
    """Right-padded model inputs of ``rows`` (each cut to ``max_length``)."""
    cut = [{k: list(r[k])[:max_length] for k in _MODEL_INPUTS if r.get(k) is not None} for r in rows]
    width = max(len(r["input_ids"]) for r in cut)
    out = {}
    for key in cut[0]:
        fill = pad_id if key == "input_ids" else 0
        out[key] = torch.tensor([r[key] + [fill] * (width - len(r[key])) for r in cut], device=device)
    if "attention_mask" not in out:
        out["attention_mask"] = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"]))
                                              for r in cut], device=device)
    return out


@torch.no_grad()
def _run(teacher, inputs: dict, lengths: list[int], task: str, top_k: int, layers, hidden_dtype) -> list[dict]:
    """The cache rows of one right-padded batch whose rows have ``lengths`` tokens."""
    out = teacher(**inputs, output_hidden_states=bool(layers))
    rows = []
    logits = out.logits.float() if top_k else None  # (B, P, V): P = T, or 1 for a sequence classifier
    if logits is not None:
        logits = logits[:, None] if logits.dim() == 2 else logits
        values, ids = torch.topk(logits, top_k, dim=-1)  # (B, P, k), sorted
        tail = logits.scatter(-1, ids, float("-inf")).logsumexp(-1)  # (B, P)
    for b, n in enumerate(lengths):
        row = {"input_ids": inputs["input_ids"][b, :n].to(torch.int32).tolist()}
        if logits is not None:
            p = slice(0, 1) if task == "sequence-classification" else slice(0, n)
            row["topk_ids"] = ids[b, p].reshape(-1).to(torch.int32).tolist()
            row["topk_logits"] = values[b, p].reshape(-1).tolist()
            row["tail_logsumexp"] = tail[b, p].reshape(-1).tolist()
        for j in layers:
            row[f"hidden_{j}"] = encode_hidden(out.hidden_states[j][b, :n], hidden_dtype)
        rows.append(row)
    return rows


@contextlib.contextmanager
def _quiet_datasets():
    """No "Saving the dataset" bar per shard (ours covers the whole run)."""
    import datasets

    was_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_off:
            datasets.enable_progress_bars()


def _write_shard(rows: list[dict], features, path: str) -> int:
    """Write ``rows`` as one Arrow file at ``path`` (atomically); return its size in bytes."""
    import datasets

    cols = {name: [r[name] for r in rows] for name in features}
    with _quiet_datasets(), tempfile.TemporaryDirectory(dir=os.path.dirname(path), prefix=".shard-") as tmp:
        datasets.Dataset.from_dict(cols, features=features).save_to_disk(tmp, num_shards=1)
        os.replace(os.path.join(tmp, "data-00000-of-00001.arrow"), path)
    return os.path.getsize(path)


def _finalize(output_dir: str, meta: dict, features, shard_files: list[str]) -> None:
    """state.json + dataset_info.json (with the metadata in its description) make the folder loadable."""
    import datasets

    info = datasets.DatasetInfo(description=json.dumps(meta), features=features)
    with _quiet_datasets(), tempfile.TemporaryDirectory(dir=output_dir, prefix=".info-") as tmp:
        empty = datasets.Dataset.from_dict({k: [] for k in features}, features=features, info=info)
        empty.save_to_disk(tmp)
        with open(os.path.join(tmp, "state.json"), encoding="utf-8") as f:
            state = json.load(f)
        state["_data_files"] = [{"filename": name} for name in shard_files]
        state["_fingerprint"] = meta["fingerprint_hash"]
        shutil.copy(os.path.join(tmp, "dataset_info.json"), os.path.join(output_dir, "dataset_info.json"))
        with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
            json.dump(state, f, indent=2, sort_keys=True)
        os.replace(os.path.join(tmp, "state.json"), os.path.join(output_dir, "state.json"))


def _save_meta(output_dir: str, meta: dict) -> None:
    tmp = os.path.join(output_dir, META_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(output_dir, META_FILE))


def cache_teacher_outputs(teacher, dataset, output_dir: str, top_k: int = 32, hidden_layers=None,
                          max_length: int | None = None, batch_size: int = 8, tokenizer=None,
                          shard_rows: int = 1024, hidden_dtype: str = "float16", progress: bool = True) -> str:
    """Run ``teacher`` once over ``dataset`` and write its top-k logits (and hidden states) to ``output_dir``.

    Returns ``output_dir``. See the module docstring for the layout; ``tokenizer`` (optional) enters the
    fingerprint, so that training with another tokenizer is refused.
    """
    output_dir = os.fspath(output_dir)
    task, width, n_layers, layers = _check_args(teacher, dataset, output_dir, top_k, hidden_layers, max_length,
                                                batch_size, shard_rows, hidden_dtype)
    fields = fingerprint(teacher, tokenizer, dataset, max_length, top_k, layers, hidden_dtype)
    meta = {
        "format": 1, "complete": False, "fingerprint": fields, "num_rows": len(dataset), "shard_rows": shard_rows,
        "task": task, "teacher_class": type(teacher).__name__, "logit_width": width, "top_k": top_k,
        "num_layers": n_layers, "hidden_size": hidden_width(teacher),
        "hidden_layers": layers, "hidden_dtype": hidden_dtype, "bytes": 0, "tokens": 0,
    }
    meta["fingerprint_hash"] = fields["hash"]
    meta_path = os.path.join(output_dir, META_FILE)
    if os.path.isfile(meta_path):
        with open(meta_path, encoding="utf-8") as f:
            old = json.load(f)
        check_fingerprint(old["fingerprint"], fields, where=output_dir, fix="write to another folder")
        if old.get("complete"):
            return output_dir
        meta["bytes"], meta["tokens"] = old.get("bytes", 0), old.get("tokens", 0)
    os.makedirs(output_dir, exist_ok=True)
    _save_meta(output_dir, meta)
    features = features_for(top_k, layers, hidden_dtype)
    n_shards = max(1, -(-len(dataset) // shard_rows))
    names = [f"data-{i:05d}.arrow" for i in range(n_shards)]
    done = [os.path.isfile(os.path.join(output_dir, n)) for n in names]
    device = next(teacher.parameters()).device
    pad_id = getattr(tokenizer, "pad_token_id", None) or 0
    was_training = teacher.training
    teacher.eval()
    bar = tqdm(total=len(dataset), desc="caching teacher outputs", unit="rows", disable=not progress,
               initial=min(len(dataset), sum(done) * shard_rows))
    try:
        for i, name in enumerate(names):
            if done[i]:
                continue
            lo, hi = i * shard_rows, min(len(dataset), (i + 1) * shard_rows)
            shard = [dataset[r] for r in range(lo, hi)]
            order = sorted(range(len(shard)), key=lambda r: len(shard[r]["input_ids"]))  # less padding
            rows: list = [None] * len(shard)
            for start in range(0, len(order), batch_size):
                picked = order[start:start + batch_size]
                inputs = _batch([shard[r] for r in picked], max_length, pad_id, device)
                lengths = [len(shard[r]["input_ids"][:max_length]) for r in picked]
                outs = _run(teacher, inputs, lengths, task, top_k, layers, hidden_dtype)
                for r, row in zip(picked, outs):
                    rows[r] = row
                bar.update(len(picked))
            meta["bytes"] += _write_shard(rows, features, os.path.join(output_dir, name))
            meta["tokens"] += sum(len(r["input_ids"]) for r in rows)
            _save_meta(output_dir, meta)
        _finalize(output_dir, {**meta, "complete": True}, features, names)
        meta["complete"] = True
        _save_meta(output_dir, meta)
    finally:
        bar.close()
        teacher.train(was_training)
    return output_dir


def cache_summary(folder: str, seconds: float | None = None) -> dict:
    """Rows, tokens, bytes (and bytes per token) of a cache folder, from its metadata."""
    with open(os.path.join(folder, META_FILE), encoding="utf-8") as f:
        meta = json.load(f)
    info = {"output_dir": folder, "complete": meta["complete"], "rows": meta["num_rows"], "tokens": meta["tokens"],
            "bytes": meta["bytes"], "bytes_per_token": round(meta["bytes"] / max(meta["tokens"], 1), 1),
            "top_k": meta["top_k"], "hidden_layers": meta["hidden_layers"]}
    return info if seconds is None else {**info, "seconds": round(seconds, 3)}


def cache_teacher_from_folders(model: str, data: str, output_dir: str, task: str = "causal-lm",
                               trust_remote_code: bool = False, **options) -> dict:
    """``hf-compress cache-teacher``: load the teacher folder (its tokenizer when present) and a
    ``save_to_disk`` data folder, cache, and return :func:`cache_summary`. Bad paths fail before loading."""
    import time

    import datasets
    import transformers

    from ..errors import CheckpointError
    from ..tasks import auto_class

    if not os.path.isdir(model):
        raise CheckpointError(f"`model` must be a teacher folder, got {model!r}")
    if not os.path.isfile(os.path.join(data, "state.json")):
        raise CheckpointError(f"`data` must be a folder written by datasets' save_to_disk, got {data!r}")
    dataset = datasets.load_from_disk(data)
    teacher = auto_class(task).from_pretrained(model, use_safetensors=True, trust_remote_code=trust_remote_code)
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError):  # no tokenizer files: the fingerprint has no tokenizer
        tokenizer = None
    start = time.perf_counter()
    folder = cache_teacher_outputs(teacher, dataset, output_dir, tokenizer=tokenizer, **options)
    return cache_summary(folder, time.perf_counter() - start)
