"""A teacher read from a cache (:mod:`.cache`), and the checks that match a data set's rows to a cache's rows.

:class:`CachedTeacher` returns the cached top-k logits and hidden states of a batch's rows (the ``ROW_COLUMN``
index column, added here). :func:`cached_teacher_for` opens the training cache; :class:`EvalCaches` holds the
caches of evaluation sets (``eval_teacher_cache``): a data set whose rows were cached gets its row column and its
source, any other one is evaluated without a teacher (the student's task loss).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import HfCompressError
from .cache_format import ROW_COLUMN, check_fingerprint, decode_hidden, open_teacher_cache, tokenizer_hash
from .teacher import TeacherOutput, model_task

__all__ = ["CachedTeacher", "EvalCaches", "cached_teacher_for"]


class CachedTeacher:
    """Teacher outputs read from a cache (:mod:`.cache`): the row of each example is its ``ROW_COLUMN`` value.

    A cached row covers the example's own tokens; the batch may pad it on either side (the offset is found by
    comparing token ids). A valid loss position outside the cached tokens, or a row whose tokens differ from the
    example's, is an error: the cache was built from other data.
    """

    chunkable = True

    def __init__(self, data, meta: dict, dtype: torch.dtype, names=("teacher_cache", "train_dataset")):
        self.data, self.meta, self.dtype, self.row_column = data.with_format("numpy"), meta, dtype, ROW_COLUMN
        self.task, self.k = meta["task"], meta["top_k"]
        self.names = names  # (the cache's argument, the dataset's argument): for the error messages

    def check_hidden_layers(self, needed) -> None:
        missing = sorted(set(needed) - set(self.meta["hidden_layers"]))
        if missing:
            raise HfCompressError(
                f"`{self.names[0]}` must hold the teacher hidden states {missing} that layer_map pairs with (set "
                f"alpha_hidden=0, or cache with hidden_layers={sorted(set(needed))}), got hidden_layers="
                f"{self.meta['hidden_layers']}"
            )

    def __call__(self, inputs: dict, hidden_layers=(), final_hidden: bool = False) -> TeacherOutput:
        from .masks import item_masks

        rows = inputs.get(self.row_column)
        if rows is None:
            raise HfCompressError(
                f"a cached teacher needs the `{self.row_column}` column that DistillationTrainer adds to the "
                f"{self.names[1]} matched to {self.names[0]}: pass the dataset the cache was built from"
            )
        ids = inputs["input_ids"]  # (B, T)
        (bsz, width), dev = ids.shape, ids.device
        seq = self.task == "sequence-classification"
        pos = 1 if seq else width
        rec = self.data[[int(r) for r in rows]]
        out = TeacherOutput(covered=torch.zeros(bsz, width, dtype=torch.bool, device=dev))
        if self.k:
            out.topk_ids = torch.zeros(bsz, pos, self.k, dtype=torch.long, device=dev)
            out.topk_logits = torch.zeros(bsz, pos, self.k, device=dev)
            out.tail_logsumexp = torch.zeros(bsz, pos, device=dev)
        for j in hidden_layers:
            out.hidden_states[j] = torch.zeros(bsz, width, self.meta["hidden_size"], dtype=self.dtype, device=dev)
        for b in range(bsz):
            cached = torch.as_tensor(rec["input_ids"][b]).to(dev, torch.long)
            n = cached.numel()
            off = 0 if torch.equal(ids[b, :n], cached) else width - n
            if n > width or not torch.equal(ids[b, off:off + n], cached):
                raise HfCompressError(
                    f"`{self.names[0]}` row {int(rows[b])} holds other tokens than the example matched to it: "
                    f"build the cache from this {self.names[1]} (same rows, same max_length)"
                )
            out.covered[b, off:off + n] = True
            p = slice(0, 1) if seq else slice(off, off + n)
            if self.k:
                out.topk_ids[b, p] = torch.as_tensor(rec["topk_ids"][b]).to(dev, torch.long).view(-1, self.k)
                out.topk_logits[b, p] = torch.as_tensor(rec["topk_logits"][b]).to(dev).view(-1, self.k)
                out.tail_logsumexp[b, p] = torch.as_tensor(rec["tail_logsumexp"][b]).to(dev)
            for j in hidden_layers:
                h = decode_hidden(rec[f"hidden_{j}"][b], self.meta["hidden_dtype"]).to(dev, self.dtype)
                out.hidden_states[j][b, off:off + n] = h.view(n, -1)
        logit_mask, hidden_mask, _ = item_masks(inputs, self.task)
        need = logit_mask if not seq else None
        cover = out.covered[:, :-1] if self.task == "causal-lm" else out.covered
        if (need is not None and bool((need & ~cover).any())) or bool((hidden_mask & ~out.covered).any()):
            raise HfCompressError(
                "the batch has valid positions outside the cached tokens (left padding, or rows longer than the "
                "cache's max_length): pad on the right and tokenize with the cache's max_length"
            )
        if seq and self.k:
            out.topk_ids, out.topk_logits = out.topk_ids[:, 0], out.topk_logits[:, 0]  # (B, k)
            out.tail_logsumexp = out.tail_logsumexp[:, 0]  # (B,)
        return out


def _open(cache, student: nn.Module, args, name: str):
    """(data, metadata, where) of a cache for distilling into ``student`` with ``args``; its head and width checked."""
    data, meta = open_teacher_cache(cache, name)
    where = cache if isinstance(cache, (str, os.PathLike)) else "(dataset)"
    task = model_task(student)
    if meta["task"] != task:
        raise HfCompressError(f"`{name}` holds {meta['task']} outputs ({meta['teacher_class']}) but the "
                              f"student is a {task} model ({type(student).__name__}); cache a teacher with the same head")
    if args.alpha_logits > 0:
        if meta["top_k"] == 0:
            raise HfCompressError(f"`{name}` {where} holds no logits (top_k=0): set alpha_logits=0 or "
                                  f"cache with top_k > 0")
        if args.logit_loss == "mse":
            raise HfCompressError("`logit_loss` must be forward_kl, reverse_kl or jsd with a teacher cache (it "
                                  "holds top-k logits only), got 'mse'")
    s_cfg = student.config
    width = s_cfg.num_labels if task == "sequence-classification" else getattr(s_cfg, "vocab_size", None)
    if args.alpha_logits > 0 and task != "base" and meta["logit_width"] != width:
        raise HfCompressError(f"`{name}` holds logits over {meta['logit_width']} ids but the student has "
                              f"{width}: cache a teacher with the student's vocabulary (or label count)")
    return data, meta, where


def _matched(dataset, meta: dict, where, names, tokenizer, what: str):
    """``dataset`` checked against the cache it was built from (rows, fingerprint, lengths), with ROW_COLUMN."""
    import datasets
    import pyarrow.compute as pc

    if not isinstance(dataset, datasets.Dataset):
        raise HfCompressError(f"`{names[1]}` must be the datasets.Dataset the cache was built from (rows are "
                              f"matched by index), got {type(dataset).__name__}")
    if len(dataset) != meta["num_rows"]:
        raise HfCompressError(f"`{names[1]}` must have the cache's {meta['num_rows']} rows, got "
                              f"{len(dataset)}; cache this {what} set")
    stored = meta["fingerprint"]
    check_fingerprint(stored, {"dataset": dataset._fingerprint,
                               "tokenizer": tokenizer_hash(tokenizer) if stored.get("tokenizer") else None},
                      where=str(where), fix=f"cache this {what} set with this tokenizer (cache_teacher_outputs)")
    limit = stored.get("max_length")
    longest = pc.max(pc.list_value_length(dataset.data.column("input_ids"))).as_py() or 0
    if limit is not None and longest > limit:
        raise HfCompressError(f"`{names[0]}` {where} was written with max_length={limit}: {what} rows "
                              f"must be at most that long, got a row of {longest} tokens; truncate them or recache")
    return _with_rows(dataset)


def _with_rows(dataset):
    if ROW_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(ROW_COLUMN)
    return dataset.add_column(ROW_COLUMN, list(range(len(dataset))))


def cached_teacher_for(cache, student: nn.Module, args, train_dataset, tokenizer=None):
    """Open ``cache`` for distilling into ``student`` on ``train_dataset``: checks before any training step.

    Returns (:class:`CachedTeacher`, task, teacher ``(num_layers, hidden_size)``, the training set with the
    ``ROW_COLUMN`` index column added).
    """
    data, meta, where = _open(cache, student, args, "teacher_cache")
    train_dataset = _matched(train_dataset, meta, where, ("teacher_cache", "train_dataset"), tokenizer, "training")
    source = CachedTeacher(data, meta, student.dtype)
    return source, meta["task"], (meta["num_layers"], meta["hidden_size"]), train_dataset


class EvalCaches:
    """The teacher caches of a teacher-cache run's evaluation sets (``eval_teacher_cache``).

    :meth:`add` checks a cache against the training cache (same teacher) and its data set (as for training) and
    returns the data set with its row column; :meth:`source_for` gives any data set later handed to evaluation its
    cached source, or None when its rows were not cached (it is then evaluated on the student's task loss).
    """

    def __init__(self, student: nn.Module, args, train: CachedTeacher, tokenizer=None, train_sets=()):
        """``train_sets``: the training set as given and as matched (evaluating on it reads the training cache)."""
        self.student, self.args, self.train, self.tokenizer = student, args, train, tokenizer
        self.by_original, self.by_matched = {}, {}  # dataset fingerprint -> CachedTeacher
        if train_sets:
            self.by_original[train_sets[0]._fingerprint] = self.by_matched[train_sets[1]._fingerprint] = train

    def add_all(self, caches, eval_dataset):
        """``caches``: one cache for one ``eval_dataset``, or a dict of caches for some names of a dict of them."""
        if not isinstance(eval_dataset, dict):
            if isinstance(caches, dict):
                raise HfCompressError(f"`eval_teacher_cache` must be one cache for one eval_dataset, got a dict "
                                      f"of {len(caches)} for a {type(eval_dataset).__name__}")
            return self.add(caches, eval_dataset, "eval_dataset")
        if not isinstance(caches, dict) or not set(caches) <= set(eval_dataset):
            got = sorted(caches) if isinstance(caches, dict) else type(caches).__name__
            raise HfCompressError(f"`eval_teacher_cache` must be a dict of caches keyed by names of the "
                                  f"eval_dataset dict {sorted(eval_dataset)}, got {got}")
        return {name: self.add(caches[name], ds, f"eval_dataset[{name!r}]") if name in caches else ds
                for name, ds in eval_dataset.items()}

    def add(self, cache, dataset, name: str):
        names = ("eval_teacher_cache", name)
        data, meta, where = _open(cache, self.student, self.args, names[0])
        mine, theirs = self.train.meta["fingerprint"], meta["fingerprint"]
        for field in ("teacher", "tokenizer"):
            if mine.get(field) != theirs.get(field):
                raise HfCompressError(f"`eval_teacher_cache` {where} was written by another {field} than "
                                      f"teacher_cache ({theirs.get(field)!r} vs {mine.get(field)!r}): cache the "
                                      f"eval set with the training cache's teacher and tokenizer")
        matched = _matched(dataset, meta, where, names, self.tokenizer, "evaluation")
        source = CachedTeacher(data, meta, self.student.dtype, names)
        self.by_original[dataset._fingerprint] = self.by_matched[matched._fingerprint] = source
        return matched

    def check_hidden_layers(self, needed) -> None:
        for source in self.by_matched.values():
            source.check_hidden_layers(needed)

    def source_for(self, dataset):
        """(``dataset``, with its row column when its rows were cached; its CachedTeacher or None)."""
        fp = getattr(dataset, "_fingerprint", None)
        if fp in self.by_matched:
            return dataset, self.by_matched[fp]
        if fp in self.by_original:  # the cached data set itself, passed again to evaluate() / predict()
            matched = _with_rows(dataset)
            self.by_matched[matched._fingerprint] = self.by_original[fp]
            return matched, self.by_original[fp]
        return dataset, None
