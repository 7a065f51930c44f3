"""DistillationArguments: TrainingArguments plus the distillation knobs (every field is a CLI flag)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from transformers import TrainingArguments

from ..errors import HfCompressError
from .options import HIDDEN_LOSSES, LOGIT_LOSSES, OPTIONS, RELATION_LOSSES, check_options

__all__ = ["HIDDEN_LOSSES", "LOGIT_LOSSES", "RELATION_LOSSES", "DistillationArguments"]


@dataclass
class DistillationArguments(TrainingArguments):
    """Training arguments of :class:`~hf_compress.DistillationTrainer`.

    The training loss is ``alpha_logits * L_kd + alpha_hidden * L_hidden + alpha_task * L_task + alpha_embedding *
    L_embedding + alpha_relation * L_relation``; each term is a mean over the valid items of the whole
    gradient-accumulation window (see the trainer's docstring).
    """

    temperature: float = field(default=2.0, metadata={"help": "Softmax temperature tau of the logit losses (> 0)."})
    alpha_logits: float = field(default=1.0, metadata={"help": "Weight of the logit distillation loss (>= 0)."})
    alpha_hidden: float = field(default=0.0, metadata={"help": "Weight of the hidden-state loss (>= 0)."})
    alpha_task: float = field(
        default=0.0, metadata={"help": "Weight of the student's own loss on the labels (>= 0; needs labels)."}
    )
    alpha_embedding: float = field(
        default=0.0,
        metadata={"help": "Weight of the sentence-embedding loss (>= 0): 1 - cosine between the student's and the "
                          "teacher's final hidden states mean-pooled over the attended tokens, per sequence."},
    )
    alpha_relation: float = field(
        default=0.0,
        metadata={"help": "Weight of the relation loss (>= 0): matches the student's B x B cosine matrix of "
                          "mean-pooled final hidden states within each micro-batch to the teacher's (no "
                          "projection needed)."},
    )
    relation_loss: str = field(
        default="mse",
        metadata={"help": "Relation loss: mse (squared difference per ordered pair i != j) or kl (per row, "
                          "KL of the teacher's softmax over the other sequences to the student's)."},
    )
    relation_temperature: float = field(
        default=0.05, metadata={"help": "Softmax temperature of relation_loss=kl over the cosines (> 0)."}
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

    logit_chunk_size: int = field(
        default=0,
        metadata={"help": "Causal LMs: compute the logit losses (LM head included) in chunks of this many token "
                          "rows, so the (tokens x vocabulary) student logits never exist at once; 0 = off."},
    )

    lmbda: float = field(
        default=0.0,
        metadata={"help": "Causal LMs: share of micro-batches whose completions the student samples from the "
                          "batch's prompts (on-policy, GKD), in [0, 1]; 0 = off-policy only."},
    )
    seq_kd: bool = field(
        default=False,
        metadata={"help": "Causal LMs: the other batches' completions are sampled from the teacher "
                          "(sequence-level KD)."},
    )
    max_new_tokens: int = field(default=128, metadata={"help": "Tokens sampled per completion (lmbda, seq_kd)."})
    generation_temperature: float = field(
        default=1.0, metadata={"help": "Sampling temperature of the completions (the loss uses `temperature`)."}
    )

    @property
    def term_alphas(self) -> tuple[float, float, float, float, float]:
        """The loss terms' weights, in the trainer's order: logits, hidden, task, embedding, relation."""
        return (self.alpha_logits, self.alpha_hidden, self.alpha_task, self.alpha_embedding,
                self.alpha_relation)

    def __post_init__(self):
        for f in fields(self):  # ours and TrainingArguments': a NaN/inf rate, weight or epsilon trains garbage
            value = getattr(self, f.name, None)
            if isinstance(value, float) and not math.isfinite(value):
                raise HfCompressError(f"`{f.name}` must be a finite number, got {value!r}")
        check_options({name: getattr(self, name) for name in OPTIONS})  # the recipe's distill stage runs it too
        super().__post_init__()
