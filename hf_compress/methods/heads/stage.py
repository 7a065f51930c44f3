"""Recipe stage of the heads method: ``prune_heads``."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.checks import check_choice, check_positive, part_config
from ...errors import HfCompressError, RecipeError

__all__ = ["PruneHeadsConfig", "prune_heads_stage", "embedding_alignment_loss"]


@dataclass
class PruneHeadsConfig:
    """Prune a fraction of attention heads ranked by gradient importance (or at random); the fields of
    :class:`hf_compress.methods.heads.prune.HeadPruningConfig` plus how to rank."""

    fraction: float = 0.25
    uniform: bool = True
    whole_groups: bool = False
    export: str = "physical"
    normalize: bool = True
    method: str = "importance"
    num_batches: int = 8

    def __post_init__(self):
        check_choice("method", self.method, ("importance", "random"), RecipeError)
        check_positive("num_batches", self.num_batches, RecipeError)
        try:
            self.part_config()
        except HfCompressError as exc:
            raise RecipeError(str(exc)) from None

    def part_config(self):
        from .prune import HeadPruningConfig

        return part_config(self, HeadPruningConfig)


def embedding_alignment_loss(teacher: torch.nn.Module):
    """``loss_fn(model, batch)`` for head importance of a model without a head: minus the dot product of the
    model's and the (frozen) teacher's mean-pooled last hidden states. Its gradient on a head gate measures
    how much that head moves the sentence embedding along the teacher's; unlike a distance it is not
    zero-gradient when the model still equals the teacher."""

    def pooled(model, batch):
        hidden = model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)

    def loss_fn(model, batch):
        with torch.no_grad():
            target = pooled(teacher, batch)
        return -(pooled(model, batch) * target).sum(-1).mean()

    return loss_fn


def prune_heads_stage(ctx, cfg: PruneHeadsConfig):
    from ...arch import num_heads, num_kv_heads, num_layers
    from .prune import prune_heads, prune_heads_by_importance, select_heads

    config = cfg.part_config()
    loss_fn = embedding_alignment_loss(ctx.teacher) if ctx.task == "feature-extraction" else None
    if cfg.method == "importance":
        model, plan = prune_heads_by_importance(ctx.model, ctx.batches(cfg.num_batches), config, loss_fn=loss_fn)
    else:
        gen = torch.Generator().manual_seed(ctx.seed)
        scores = torch.rand(num_layers(ctx.model), num_heads(ctx.model), generator=gen)  # (L, H)
        group = num_heads(ctx.model) // num_kv_heads(ctx.model)
        plan = select_heads(scores, cfg.fraction, cfg.uniform, group, cfg.whole_groups)
        model = prune_heads(ctx.model, plan, export=cfg.export)
    pruned = {str(k): [int(h) for h in v] for k, v in plan.items()}
    return model, {
        "pruned_heads": pruned,
        "num_pruned": sum(len(v) for v in pruned.values()),
        "export": cfg.export,
    }
