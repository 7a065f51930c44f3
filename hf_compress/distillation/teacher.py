"""The teacher seam: the one place where the trainer asks for the teacher's outputs.

A *source* is called with a micro-batch and the teacher hidden-state indices it needs and returns a
:class:`TeacherOutput`: dense logits (a live teacher) or top-k ids + logits + the tail's log-sum-exp (a cached
teacher, :mod:`.cache`), plus the requested hidden states. :class:`LiveTeacher` runs a model; the cached
teacher lives in :mod:`.cache`.

A live teacher is never handed to ``accelerate.prepare``: it is a plain module on the local device in every
process (no DDP / FSDP wrapper, no gradient all-reduce), frozen and in eval mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import transformers
from torch import nn
from transformers.models.auto import modeling_auto

from ..errors import HfCompressError

__all__ = ["TASKS", "LiveTeacher", "TeacherOutput", "check_compatible", "load_teacher", "model_task",
           "prepare_teacher"]

#: task -> (Auto class name, class-name mapping of transformers)
TASKS = {
    "causal-lm": ("AutoModelForCausalLM", modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES),
    "masked-lm": ("AutoModelForMaskedLM", modeling_auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES),
    "sequence-classification": ("AutoModelForSequenceClassification",
                                modeling_auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES),
    "token-classification": ("AutoModelForTokenClassification",
                             modeling_auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES),
    "base": ("AutoModel", modeling_auto.MODEL_MAPPING_NAMES),
}


def _class_names(mapping) -> set[str]:
    names = set()
    for value in mapping.values():
        names.update(value if isinstance(value, (list, tuple)) else (value,))
    return names


def model_task(model: nn.Module) -> str:
    """Which auto-class family the model belongs to: one of ``TASKS``. Subclasses of a stock class count as
    that class (a physically head-pruned BERT is a ``PrunedHeadsBertModel(BertModel)``)."""
    name = type(model).__name__
    for cls in type(model).__mro__:
        for task, (_, mapping) in TASKS.items():
            if cls.__name__ in _class_names(mapping):
                return task
    raise HfCompressError(
        f"{name} is not a causal-LM, masked-LM, sequence- or token-classification or base transformers model; "
        f"DistillationTrainer supports only those"
    )


def load_teacher(teacher, student: nn.Module, trust_remote_code: bool = False) -> nn.Module:
    """A model is returned as is; a path or repo id is loaded with the student's auto class (safetensors only)."""
    if isinstance(teacher, nn.Module):
        return teacher
    if not isinstance(teacher, (str, os.PathLike)):
        raise HfCompressError(
            f"`teacher_model` must be a model, a folder or a repo id, got {type(teacher).__name__}"
        )
    auto_name, _ = TASKS[model_task(student)]
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
    s_vocab, t_vocab = getattr(s_cfg, "vocab_size", None), getattr(t_cfg, "vocab_size", None)
    if s_vocab is not None and t_vocab is not None and s_vocab != t_vocab:
        raise HfCompressError(
            f"teacher vocab_size {t_vocab} differs from the student's {s_vocab}: token ids would mean different "
            f"tokens. Use a teacher and student that share one tokenizer"
        )
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


class LiveTeacher:
    """A teacher model run on every micro-batch (no gradients, kept in eval mode)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, inputs: dict, hidden_layers=()) -> TeacherOutput:
        if self.model.training:  # someone called .train() on it: dropout must stay off
            self.model.eval()
        with torch.no_grad():
            out = self.model(**{k: v for k, v in inputs.items() if k != "labels"},
                             output_hidden_states=bool(hidden_layers))
        hidden = {j: out.hidden_states[j] for j in hidden_layers}
        return TeacherOutput(logits=getattr(out, "logits", None), hidden_states=hidden)
