"""Recipe stage of the heads method: ``prune_heads``."""

from __future__ import annotations

from .config import PruneHeadsConfig

__all__ = ["prune_heads_stage", "embedding_alignment_loss"]


def embedding_alignment_loss(teacher):
    """``loss_fn(model, batch)`` for head importance of a model without a head: minus the dot product of the
    model's and the (frozen) teacher's mean-pooled last hidden states. Its gradient on a head gate measures
    how much that head moves the sentence embedding along the teacher's; unlike a distance it is not
    zero-gradient when the model still equals the teacher."""
    import torch

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
    import torch

    from ...arch import num_heads, num_kv_heads, num_layers
    from .prune import head_importance, prune_heads, select_heads

    config = cfg.part_config()
    loss_fn = embedding_alignment_loss(ctx.teacher) if ctx.task == "feature-extraction" else None
    if cfg.method == "importance":  # the same model and batches give the same scores: kept in the memo
        scores = ctx.memoized(("head_importance", cfg.num_batches, config.normalize),
                              lambda: head_importance(ctx.model, ctx.batches(cfg.num_batches), loss_fn=loss_fn,
                                                      normalize=config.normalize))
    else:
        gen = torch.Generator().manual_seed(ctx.seed)
        scores = torch.rand(num_layers(ctx.model), num_heads(ctx.model), generator=gen)  # (L, H)
    group = num_heads(ctx.model) // num_kv_heads(ctx.model)
    plan = select_heads(scores, config.fraction, config.uniform, group, config.whole_groups)
    model = prune_heads(ctx.model, plan, export=config.export)
    pruned = {str(k): [int(h) for h in v] for k, v in plan.items()}
    return model, {
        "pruned_heads": pruned,
        "num_pruned": sum(len(v) for v in pruned.values()),
        "export": cfg.export,
    }
