"""DistillationArguments: TrainingArguments plus the distillation knobs (every field is a CLI flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from ..errors import HfCompressError
from .layer_map import parse_layer_map

__all__ = ["HIDDEN_LOSSES", "LOGIT_LOSSES", "DistillationArguments"]

LOGIT_LOSSES = ("forward_kl", "reverse_kl", "jsd", "mse")
HIDDEN_LOSSES = ("mse", "cosine", "mse+cosine")


@dataclass
class DistillationArguments(TrainingArguments):
    """Training arguments of :class:`~hf_compress.DistillationTrainer`.

    The training loss is ``alpha_logits * L_kd + alpha_hidden * L_hidden + alpha_task * L_task``; each term is a
    mean over the valid positions of the whole gradient-accumulation window (see the trainer's docstring).
    """

    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature tau of the logit losses (> 0)."})
    alpha_logits: float = field(default=1.0, metadata={"help": "Weight of the logit distillation loss (>= 0)."})
    alpha_hidden: float = field(default=0.0, metadata={"help": "Weight of the hidden-state loss (>= 0)."})
    alpha_task: float = field(
        default=0.0, metadata={"help": "Weight of the student's own loss on the labels (>= 0; needs labels)."}
    )
    logit_loss: str = field(
        default="forward_kl", metadata={"help": "Logit loss: forward_kl, reverse_kl, jsd (generalized, jsd_beta) or mse."}
    )
    jsd_beta: float = field(
        default=0.5, metadata={"help": "Mixture weight beta of the generalized JSD, strictly in (0, 1)."}
    )
    hidden_loss: str = field(default="mse", metadata={"help": "Hidden-state loss: mse, cosine or mse+cosine."})
    layer_map: str = field(
        default="uniform",
        metadata={"help": "'uniform', 'last' or a JSON list of [student, teacher] hidden-state indices "
                          "(0 = embeddings, k = output of block k), e.g. '[[1,2],[2,4],[3,6]]'. "
                          "A Python list of pairs is accepted too."},
    )
    include_embeddings: bool = field(
        default=False, metadata={"help": "Also match the embeddings output (hidden state 0)."}
    )
    save_projections: bool = field(
        default=False,
        metadata={"help": "save_model() also writes the hidden-state projections beside the model "
                          "(checkpoint-* folders always carry them, for resuming)."},
    )

    def __post_init__(self):
        def bad(name, allowed, value):
            raise HfCompressError(f"`{name}` must be {allowed}, got {value!r}")

        for f in fields(self):  # ours and TrainingArguments': a NaN/inf rate, weight or epsilon trains garbage
            value = getattr(self, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                bad(f.name, "a finite number", value)

        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            bad("temperature", "> 0", self.temperature)
        for name in ("alpha_logits", "alpha_hidden", "alpha_task"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                bad(name, ">= 0", value)
        if self.alpha_logits == 0 and self.alpha_hidden == 0 and self.alpha_task == 0:
            raise HfCompressError(
                "at least one of `alpha_logits`, `alpha_hidden`, `alpha_task` must be > 0, got all three 0"
            )
        if self.logit_loss not in LOGIT_LOSSES:
            bad("logit_loss", f"one of {', '.join(LOGIT_LOSSES)}", self.logit_loss)
        if not (isinstance(self.jsd_beta, (int, float)) and 0 < self.jsd_beta < 1):
            bad("jsd_beta", "strictly between 0 and 1", self.jsd_beta)
        if self.hidden_loss not in HIDDEN_LOSSES:
            bad("hidden_loss", f"one of {', '.join(HIDDEN_LOSSES)}", self.hidden_loss)
        parse_layer_map(self.layer_map)  # raises with the accepted forms
        super().__post_init__()
