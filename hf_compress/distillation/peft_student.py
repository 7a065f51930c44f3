"""PEFT students (LoRA and the other peft adapters): what the trainer needs to know about them.

A ``peft.PeftModel`` student is trained and saved as the stock ``Trainer`` does (only the adapter:
``adapter_model.safetensors`` + ``adapter_config.json``); its head, layers and width are read from the transformers
model inside it. The teacher may be that same base model without adapters: its outputs are then computed by the
student's own weights inside ``disable_adapter()`` (in eval mode, no gradients), so the base is held in memory once
and the trainable adapter weights are never frozen. peft is never imported here: a PEFT model is recognised by
its interface, so none of this costs anything without peft installed.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.modules import eval_mode
from ..errors import HfCompressError
from .teacher import LiveTeacher, TeacherOutput, check_compatible, model_task, prepare_teacher

__all__ = ["AdapterOffTeacher", "base_of", "check_student", "is_peft_model", "teacher_source"]

_ADAPTER_MARKERS = (".lora_A.", ".lora_B.", ".base_layer.")


def is_peft_model(model) -> bool:
    """A ``peft.PeftModel`` (or anything with its interface: ``peft_config`` and ``get_base_model``)."""
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


def base_of(model: nn.Module) -> nn.Module:
    """The transformers model inside a PEFT model (with its adapter layers); any other model as is."""
    return model.get_base_model() if is_peft_model(model) else model


def check_student(model: nn.Module) -> None:
    """Refuse the inner model of a PeftModel passed on its own: training would work, but ``save_model`` would
    write ``base_layer`` / ``lora_A`` keys that stock ``from_pretrained`` cannot map (the weights load random)."""
    if model is None or is_peft_model(model):
        return
    names = [n for n, _ in model.named_parameters() if any(m in f".{n}" for m in _ADAPTER_MARKERS)]
    if names:
        raise HfCompressError(
            f"`model` must be the PeftModel itself (peft.get_peft_model(...)), not the model inside it: "
            f"{type(model).__name__} has adapter layers (e.g. {names[0]}) that save_model() could not write as a "
            f"stock checkpoint, got the inner model"
        )


def _shares_weights(student: nn.Module, teacher: nn.Module) -> bool:
    ids = {id(p) for p in student.parameters()}
    return any(id(p) in ids for p in teacher.parameters())


class AdapterOffTeacher:
    """The student's base model with its adapters disabled, as the teacher (a :class:`LiveTeacher`-like source)."""

    def __init__(self, student: nn.Module):
        self.student, self.model = student, base_of(student)

    def __call__(self, inputs: dict, hidden_layers=()) -> TeacherOutput:
        # dropout off for the teacher's pass, restored for the student's
        with eval_mode(self.model), self.student.disable_adapter():
            out = self.model(**{k: v for k, v in inputs.items() if k != "labels"},
                             output_hidden_states=bool(hidden_layers))
        hidden = {j: out.hidden_states[j] for j in hidden_layers}
        return TeacherOutput(logits=getattr(out, "logits", None), hidden_states=hidden)


def teacher_source(student: nn.Module, teacher: nn.Module, need_logits: bool, device: torch.device):
    """``(source, task, teacher module)`` for a live teacher: a frozen copy-free :class:`LiveTeacher`, or, when
    the teacher *is* the PEFT student's base model, an :class:`AdapterOffTeacher` (nothing frozen or moved).
    A separate teacher is moved to ``device`` and the student's dtype."""
    base = base_of(student)
    if is_peft_model(student) and (teacher is student or _shares_weights(student, teacher)):
        if teacher is not base and teacher is not student:
            raise HfCompressError(
                "`teacher_model` shares weights with the PEFT student but is not its base model; pass the base "
                "model (the teacher is then run with the adapters disabled) or a separate teacher"
            )
        return AdapterOffTeacher(student), model_task(base), base
    task = check_compatible(base, teacher, need_logits=need_logits)
    teacher = prepare_teacher(teacher, device, base.dtype)
    return LiveTeacher(teacher), task, teacher
