"""The teacher seam: the one place where the trainer asks for the teacher's outputs.

A *source* is called with a micro-batch and the teacher hidden-state indices it needs and returns a
:class:`TeacherOutput`: dense logits (a live teacher) or top-k ids + logits + the tail's log-sum-exp (a cached
teacher), plus the requested hidden states. :class:`LiveTeacher` runs a model; :class:`~.cached_source.CachedTeacher`
reads what :func:`~hf_compress.distillation.cache.cache_teacher_outputs` wrote.

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
