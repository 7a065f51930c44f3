"""The teacher cache on disk: column features, hidden-state encoding, the fingerprint, opening and checking.

The fingerprint names what the cached outputs depend on: the teacher's weights (a hash of every parameter and
buffer), the tokenizer (a hash of its vocabulary and special tokens, or None), the data set (its ``datasets``
fingerprint), ``max_length``, ``top_k``, the hidden-state indices and their dtype. A mismatch is an error naming
the field.
"""

from __future__ import annotations

import hashlib
import json
import os

import torch

from ..errors import HfCompressError

__all__ = ["HIDDEN_DTYPES", "META_FILE", "ROW_COLUMN", "check_fingerprint", "decode_hidden", "encode_hidden",
           "features_for", "fingerprint", "open_teacher_cache", "tokenizer_hash", "weights_hash"]

#: metadata file of a cache folder (fingerprint, progress, shapes)
META_FILE = "hf_compress_teacher_cache.json"
#: column the trainer adds to the training set: the cache row of each example
ROW_COLUMN = "teacher_row"
#: hidden-state storage dtypes (bfloat16 is stored as its int16 bit pattern: Arrow has no bfloat16)
HIDDEN_DTYPES = ("float16", "bfloat16", "float32")
_ARROW_HIDDEN = {"float16": "float16", "bfloat16": "int16", "float32": "float32"}


def features_for(top_k: int, layers, hidden_dtype: str):
    import datasets

    seq = datasets.Sequence
    cols = {"input_ids": seq(datasets.Value("int32"))}
    if top_k:
        cols.update(topk_ids=seq(datasets.Value("int32")), topk_logits=seq(datasets.Value("float32")),
                    tail_logsumexp=seq(datasets.Value("float32")))
    for j in layers:
        cols[f"hidden_{j}"] = seq(datasets.Value(_ARROW_HIDDEN[hidden_dtype]))
    return datasets.Features(cols)


def encode_hidden(hidden: torch.Tensor, hidden_dtype: str):
    """(L, d) tensor -> flat numpy array in the storage dtype."""
    flat = hidden.detach().reshape(-1).cpu()
    if hidden_dtype == "bfloat16":
        return flat.to(torch.bfloat16).view(torch.int16).numpy()
    return flat.to(getattr(torch, hidden_dtype)).numpy()


def decode_hidden(values, hidden_dtype: str) -> torch.Tensor:
    t = torch.as_tensor(values)
    return t.view(torch.bfloat16) if hidden_dtype == "bfloat16" else t


def weights_hash(model) -> str:
    """blake2b of the class name and every named parameter / buffer (name, dtype, shape, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in sorted(tensors, key=lambda item: item[0]):
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def tokenizer_hash(tokenizer) -> str | None:
    if tokenizer is None or not hasattr(tokenizer, "get_vocab"):
        return None
    text = json.dumps([sorted(tokenizer.get_vocab().items()), getattr(tokenizer, "all_special_tokens", [])])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def fingerprint(teacher, tokenizer, dataset, max_length, top_k, layers, hidden_dtype) -> dict:
    fields = {"teacher": weights_hash(teacher), "tokenizer": tokenizer_hash(tokenizer),
              "dataset": dataset._fingerprint, "max_length": max_length, "top_k": top_k,
              "hidden_layers": list(layers), "hidden_dtype": hidden_dtype}
    fields["hash"] = hashlib.blake2b(json.dumps(fields, sort_keys=True).encode(), digest_size=8).hexdigest()
    return fields


def check_fingerprint(stored: dict, expected: dict, where: str, fix: str) -> None:
    """Raise naming the first field of ``expected`` (``None`` values are not checked) that ``stored`` differs in."""
    for field, value in expected.items():
        if field == "hash" or value is None:
            continue
        if stored.get(field) != value:
            raise HfCompressError(
                f"teacher cache {where} was written for another {field}: `{field}` must be {stored.get(field)!r} "
                f"to use it, got {value!r}; {fix}"
            )


def open_teacher_cache(cache, name: str = "teacher_cache"):
    """A cache folder or a dataset loaded from one -> (memory-mapped ``datasets.Dataset``, metadata dict)."""
    import datasets

    if isinstance(cache, datasets.Dataset):
        try:
            meta = json.loads(cache.info.description or "")
        except json.JSONDecodeError:
            meta = None
        if not isinstance(meta, dict) or "fingerprint" not in meta:
            raise HfCompressError(f"`{name}` must be a folder written by cache_teacher_outputs or the "
                                  "dataset loaded from one, got a datasets.Dataset without its metadata")
        return cache, meta
    if not isinstance(cache, (str, os.PathLike)):
        raise HfCompressError(f"`{name}` must be a folder or a datasets.Dataset, got {type(cache).__name__}")
    folder = os.fspath(cache)
    meta_path = os.path.join(folder, META_FILE)
    if not os.path.isfile(meta_path):
        raise HfCompressError(f"`{name}` must be a folder written by cache_teacher_outputs (with "
                              f"{META_FILE}), got {folder!r}")
    with open(meta_path, encoding="utf-8") as f:
        meta = json.load(f)
    if not meta.get("complete") or not os.path.isfile(os.path.join(folder, "state.json")):
        done = sum(os.path.isfile(os.path.join(folder, n)) for n in os.listdir(folder) if n.endswith(".arrow"))
        raise HfCompressError(
            f"`{name}` {folder!r} is incomplete ({done} of {-(-meta['num_rows'] // meta['shard_rows'])} "
            f"shards; the writer stopped): rerun cache_teacher_outputs with the same arguments to finish it"
        )
    return datasets.load_from_disk(folder), meta
