"""The teacher seam: the one place where the trainer asks for the teacher's outputs.

A *source* is called with a micro-batch and the teacher hidden-state indices it needs and returns a
:class:`TeacherOutput`: dense logits (a live teacher) or top-k ids + logits + the tail's log-sum-exp (a cached
teacher), plus the requested hidden states. :class:`LiveTeacher` runs a model; :class:`CachedTeacher` reads
what :func:`~hf_compress.distillation.cache.cache_teacher_outputs` wrote.

A live teacher is never handed to ``accelerate.prepare``: it is a plain module on the local device in every
process (no DDP / FSDP wrapper, no gradient all-reduce), frozen and in eval mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn

from ..errors import HfCompressError
from ..tasks import head_of, task_of_head

__all__ = ["LiveTeacher", "TeacherOutput", "check_compatible", "shared_vocab", "load_teacher", "model_task", "prepare_teacher"]


def model_task(model: nn.Module) -> str:
    """Which head the model has (the distillation head kind of :mod:`hf_compress.tasks`): ``causal-lm``,
    ``masked-lm``, ``sequence-classification``, ``token-classification`` or ``base``."""
    return head_of(model)


def load_teacher(teacher, student: nn.Module, trust_remote_code: bool = False) -> nn.Module:
    """A model is returned as is; a path or repo id is loaded with the student's auto class (safetensors only)."""
    if isinstance(teacher, nn.Module):
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise HfCompressError(
            f"`teacher_model` must be a model, a folder or a repo id, got {type(teacher).__name__}"
        )
    auto_name = task_of_head(model_task(student)).auto_class
    auto = getattr(transformers, auto_name)
    try:
        return auto.from_pretrained(
            os.fspath(teacher), use_safetensors=True, dtype=student.dtype, trust_remote_code=trust_remote_code
        )
    except OSError as exc:
        raise HfCompressError(
            f"cannot load the teacher {os.fspath(teacher)!r} with {auto_name} (safetensors only, offline): {exc}"
        ) from exc


def check_compatible(student: nn.Module, teacher: nn.Module, need_logits: bool) -> str:
    """Refuse a teacher whose vocabulary, label count or head differs from the student's; return the task."""
    if teacher is student:
        raise HfCompressError("`teacher_model` is the student itself; pass a separate (e.g. deep-copied) teacher")
    task = model_task(student)
    s_cfg, t_cfg = student.config, teacher.config
    if task in ("sequence-classification", "token-classification") and s_cfg.num_labels != t_cfg.num_labels:
        raise HfCompressError(
            f"teacher num_labels {t_cfg.num_labels} differs from the student's {s_cfg.num_labels}; "
            f"give both classification heads the same labels"
        )
    if need_logits:
        t_task = model_task(teacher)
        if task == "base":
            raise HfCompressError(
                f"{type(student).__name__} has no logits to distil; set alpha_logits=0 (hidden states only) "
                f"or use a model with a head"
            )
        if t_task != task:
            raise HfCompressError(
                f"teacher is a {t_task} model ({type(teacher).__name__}) but the student is a {task} model "
                f"({type(student).__name__}); logit distillation needs the same head"
            )
    return task


def prepare_teacher(teacher: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Freeze (``requires_grad=False``), eval mode (dropout off), move to the student's device and dtype."""
    teacher.requires_grad_(False)
    teacher.eval()
    return teacher.to(device=device, dtype=dtype)


@dataclass
class TeacherOutput:
    """What the losses need from the teacher for one micro-batch (``P`` = positions: ``T``, or 1 for a
    sequence classifier)."""

    logits: torch.Tensor | None = None  # dense (B, T, V) or (B, C)
    topk_ids: torch.Tensor | None = None  # (B, P, k) int64
    topk_logits: torch.Tensor | None = None  # (B, P, k) fp32
    tail_logsumexp: torch.Tensor | None = None  # (B, P): log-sum-exp of the logits outside the top k
    hidden_states: dict = field(default_factory=dict)  # teacher hidden-state index -> (B, T, d_T)
    covered: torch.Tensor | None = None  # (B, P) bool: positions the source has outputs for (None: all)
    final_hidden: torch.Tensor | None = None  # (B, T, d_T): instead of logits, for chunked losses
    head: tuple | None = None  # (weight, bias, soft-cap) of the teacher's LM head, with final_hidden


class LiveTeacher:
    """A teacher model run on every micro-batch (no gradients, kept in eval mode)."""

    chunkable = True  # can hand over final hidden states + LM head instead of logits (chunked losses)

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, inputs: dict, hidden_layers=(), final_hidden: bool = False) -> TeacherOutput:
        """``final_hidden``: return the last hidden states and the LM head instead of the (B, T, V) logits."""
        if self.model.training:  # someone called .train() on it: dropout must stay off
            self.model.eval()
        extra = {"logits_to_keep": 1} if final_hidden else {}
        with torch.no_grad():
            out = self.model(**{k: v for k, v in inputs.items() if k != "labels"},
                             output_hidden_states=bool(hidden_layers) or final_hidden, **extra)
        hidden = {j: out.hidden_states[j] for j in hidden_layers}
        if final_hidden:
            from .chunked import lm_head_of

            return TeacherOutput(final_hidden=out.hidden_states[-1], head=lm_head_of(self.model), hidden_states=hidden)
        return TeacherOutput(logits=getattr(out, "logits", None), hidden_states=hidden)


class CachedTeacher:
    """Teacher outputs read from a cache (:mod:`.cache`): the row of each example is its ``ROW_COLUMN`` value.

    A cached row covers the example's own tokens; the batch may pad it on either side (the offset is found by
    comparing token ids). A valid loss position outside the cached tokens, or a row whose tokens differ from the
    example's, is an error: the cache was built from other data.
    """

    chunkable = True

    def __init__(self, data, meta: dict, dtype: torch.dtype):
        from .cache_format import ROW_COLUMN

        self.data, self.meta, self.dtype, self.row_column = data.with_format("numpy"), meta, dtype, ROW_COLUMN
        self.task, self.k = meta["task"], meta["top_k"]

    def check_hidden_layers(self, needed) -> None:
        missing = sorted(set(needed) - set(self.meta["hidden_layers"]))
        if missing:
            raise HfCompressError(
                f"`teacher_cache` must hold the teacher hidden states {missing} that layer_map pairs with (set "
                f"alpha_hidden=0, or cache with hidden_layers={sorted(set(needed))}), got hidden_layers="
                f"{self.meta['hidden_layers']}"
            )

    def __call__(self, inputs: dict, hidden_layers=(), final_hidden: bool = False) -> TeacherOutput:
        from .cache_format import decode_hidden
        from .masks import item_masks

        rows = inputs.get(self.row_column)
        if rows is None:
            raise HfCompressError(
                f"a cached teacher needs the `{self.row_column}` column of the training set; only the training "
                f"set is cached: evaluate with a live `teacher_model`"
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
                    f"`teacher_cache` row {int(rows[b])} holds other tokens than the training example matched to "
                    f"it: build the cache from this train_dataset (same rows, same max_length)"
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


def cached_teacher_for(cache, student: nn.Module, args, train_dataset, tokenizer=None):
    """Open ``cache`` for distilling into ``student`` on ``train_dataset``: checks before any training step.

    Returns (:class:`CachedTeacher`, task, teacher ``(num_layers, hidden_size)``, the training set with the
    ``ROW_COLUMN`` index column added).
    """
    import datasets
    import pyarrow.compute as pc

    from .cache_format import ROW_COLUMN, check_fingerprint, open_teacher_cache, tokenizer_hash

    data, meta = open_teacher_cache(cache)
    where = cache if isinstance(cache, (str, os.PathLike)) else "(dataset)"
    task = model_task(student)
    if meta["task"] != task:
        raise HfCompressError(f"`teacher_cache` holds {meta['task']} outputs ({meta['teacher_class']}) but the "
                              f"student is a {task} model ({type(student).__name__}); cache a teacher with the same head")
    if args.alpha_logits > 0:
        if meta["top_k"] == 0:
            raise HfCompressError(f"`teacher_cache` {where} holds no logits (top_k=0): set alpha_logits=0 or "
                                  f"cache with top_k > 0")
        if args.logit_loss == "mse":
            raise HfCompressError("`logit_loss` must be forward_kl, reverse_kl or jsd with a teacher cache (it "
                                  "holds top-k logits only), got 'mse'")
    s_cfg = student.config
    width = s_cfg.num_labels if task == "sequence-classification" else getattr(s_cfg, "vocab_size", None)
    if args.alpha_logits > 0 and task != "base" and meta["logit_width"] != width:
        raise HfCompressError(f"`teacher_cache` holds logits over {meta['logit_width']} ids but the student has "
                              f"{width}: cache a teacher with the student's vocabulary (or label count)")
    strategy = getattr(getattr(args, "eval_strategy", "no"), "value", getattr(args, "eval_strategy", "no"))
    if strategy != "no":
        raise HfCompressError(f"`eval_strategy` must be 'no' with a teacher_cache (only the training set is cached; "
                              f"evaluate with a live teacher_model), got {strategy!r}")
    if not isinstance(train_dataset, datasets.Dataset):
        raise HfCompressError(f"`train_dataset` must be the datasets.Dataset the cache was built from (rows are "
                              f"matched by index), got {type(train_dataset).__name__}")
    if len(train_dataset) != meta["num_rows"]:
        raise HfCompressError(f"`train_dataset` must have the cache's {meta['num_rows']} rows, got "
                              f"{len(train_dataset)}; cache this training set")
    stored = meta["fingerprint"]
    check_fingerprint(stored, {"dataset": train_dataset._fingerprint,
                               "tokenizer": tokenizer_hash(tokenizer) if stored.get("tokenizer") else None},
                      where=str(where), fix="cache this training set with this tokenizer (cache_teacher_outputs)")
    limit = stored.get("max_length")
    longest = pc.max(pc.list_value_length(train_dataset.data.column("input_ids"))).as_py() or 0
    if limit is not None and longest > limit:
        raise HfCompressError(f"`teacher_cache` {where} was written with max_length={limit}: training rows "
                              f"must be at most that long, got a row of {longest} tokens; truncate them or recache")
    if ROW_COLUMN in train_dataset.column_names:
        train_dataset = train_dataset.remove_columns(ROW_COLUMN)
    train_dataset = train_dataset.add_column(ROW_COLUMN, list(range(len(train_dataset))))
    return CachedTeacher(data, meta, student.dtype), task, (meta["num_layers"], meta["hidden_size"]), train_dataset


def _mapping(tokenizer, n: int) -> list:
    return tokenizer.convert_ids_to_tokens(list(range(n)))


def shared_vocab(student_vocab, teacher_vocab, tokenizer=None, teacher_tokenizer=None) -> int | None:
    """``None`` when the vocabularies are equal; else the common prefix size to distil over, after checking
    that every real token id lies in it and both tokenizers map those ids identically (logged once).

    Teachers and students of one family often differ only by padding rows of the embedding (151,936 vs
    152,064 in Qwen2.5). Anything else is refused, naming both sizes and what differs.
    """
    if student_vocab is None or teacher_vocab is None or student_vocab == teacher_vocab:
        return None
    common = min(student_vocab, teacher_vocab)
    head = f"teacher vocab_size {teacher_vocab} differs from the student's {student_vocab}"
    tok_s, tok_t = tokenizer, teacher_tokenizer if teacher_tokenizer is not None else tokenizer
    if tok_s is None or not hasattr(tok_s, "convert_ids_to_tokens"):
        raise HfCompressError(f"{head}: pass the tokenizer as `processing_class` (and `teacher_tokenizer` if the "
                              f"teacher has its own) so the shared ids can be checked, or use one vocabulary")
    n_s, n_t = len(tok_s), len(tok_t)
    if max(n_s, n_t) > common:
        raise HfCompressError(f"{head}: the tokenizers have {n_s} (student) and {n_t} (teacher) tokens, more than "
                              f"the common {common} ids; token ids would reach rows one model does not have")
    if tok_t is not tok_s:
        a, b = _mapping(tok_s, min(n_s, n_t)), _mapping(tok_t, min(n_s, n_t))
        diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if diff is not None or n_s != n_t:
            what = f"id {diff} is {a[diff]!r} vs {b[diff]!r}" if diff is not None else f"{n_s} vs {n_t} tokens"
            raise HfCompressError(f"{head} and the tokenizers map ids differently ({what}): token ids would mean "
                                  f"different tokens; use a teacher and student that share one tokenizer")
    import logging

    logging.getLogger(__name__).warning(
        "%s only by padding rows (the tokenizers share ids 0..%d): distilling over the common %d ids",
        head, max(n_s, n_t) - 1, common)
    return common
