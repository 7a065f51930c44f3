"""One function per recipe stage, each a thin call into the public API of its part.

A stage takes the :class:`StageContext` and its config (``configs.py``) and returns the model to carry on
with plus a small JSON-able record of what it did (kept in ``compression_config.json``). Parts are imported
inside the functions, so validating a recipe loads none of them.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field

import torch

__all__ = ["StageContext", "STAGE_FUNCTIONS", "run_stage"]

logger = logging.getLogger(__name__)


@dataclass
class StageContext:
    model: torch.nn.Module  # the model being compressed (changes stage by stage)
    teacher: torch.nn.Module  # the model as loaded: distillation teacher and quality reference
    tokenizer: object
    texts: list[str]  # training / calibration texts
    task: str
    seed: int = 0
    batch_size: int = 8
    max_length: int = 128
    records: list[dict] = field(default_factory=list)

    def batches(self, n: int) -> list[dict]:
        """The first ``n`` calibration batches (importance scores, Wanda, GPTQ)."""
        from ..evaluation import tokenize_batches

        texts = self.texts[: n * self.batch_size]
        return tokenize_batches(self.tokenizer, texts, batch_size=self.batch_size, max_length=self.max_length)


def student_from_teacher(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    from ..arch import num_layers
    from ..surgery.layers import student_from_teacher as build

    before = num_layers(ctx.model)
    student = build(ctx.model, keep=cfg.keep, num_layers=cfg.num_layers)
    return student, {"layers_before": before, "layers_after": num_layers(student)}


def drop_layers(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    from ..surgery.layers import drop_layers as drop
    from ..surgery.layers import layer_importance, select_layers

    record: dict = {}
    indices = cfg.layers
    if indices is None:
        block = cfg.num_layers if cfg.contiguous else 1  # contiguous: score whole blocks of n layers
        scores = layer_importance(ctx.model, ctx.batches(cfg.num_batches), method=cfg.method, n=block)
        indices = select_layers(scores, cfg.num_layers, contiguous=cfg.contiguous, block=block)
        record["scores"] = [round(float(s), 6) for s in scores]
    record["dropped"] = [int(i) for i in indices]
    return drop(ctx.model, indices), record


def distill(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    import datasets

    from ..distillation.args import DistillationArguments
    from ..distillation.trainer import DistillationTrainer

    has_logits = ctx.task != "feature-extraction"
    alpha_logits = cfg.alpha_logits if cfg.alpha_logits is not None else (1.0 if has_logits else 0.0)
    enc = ctx.tokenizer(ctx.texts, truncation=True, max_length=cfg.max_length)
    dataset = datasets.Dataset.from_dict({k: list(v) for k, v in enc.items()})
    with tempfile.TemporaryDirectory(prefix="hf_compress-distill-") as out:
        args = DistillationArguments(
            output_dir=out,
            max_steps=cfg.max_steps,
            learning_rate=cfg.learning_rate,
            per_device_train_batch_size=cfg.batch_size,
            temperature=cfg.temperature,
            alpha_logits=alpha_logits,
            alpha_hidden=cfg.alpha_hidden,
            alpha_task=cfg.alpha_task,
            logit_loss=cfg.logit_loss,
            jsd_beta=cfg.jsd_beta,
            hidden_loss=cfg.hidden_loss,
            layer_map=cfg.layer_map,
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            logging_steps=cfg.logging_steps,
            save_strategy="no",
            report_to=[],
            seed=ctx.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
            remove_unused_columns=False,
        )
        trainer = DistillationTrainer(
            model=ctx.model,
            teacher_model=ctx.teacher,
            args=args,
            train_dataset=dataset,
            processing_class=ctx.tokenizer,
        )
        result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model.eval()
    return model, {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
    }


def embedding_alignment_loss(teacher: torch.nn.Module):
    """``loss_fn(model, batch)`` for head importance of a model without a head: minus the dot product of the
    model's and the (frozen) teacher's mean-pooled last hidden states. Its gradient on a head gate measures
    how
    much that head moves the sentence embedding along the teacher's; unlike a distance it is not zero-gradient
    when the model still equals the teacher."""

    def pooled(model, batch):
        hidden = model(**batch).last_hidden_state  # (B, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)

    def loss_fn(model, batch):
        with torch.no_grad():
            target = pooled(teacher, batch)
        return -(pooled(model, batch) * target).sum(-1).mean()

    return loss_fn


def prune_heads(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    from ..arch import num_heads, num_kv_heads
    from ..surgery.heads import head_importance, prune_heads_by_importance, select_heads
    from ..surgery.heads import prune_heads as prune

    config = cfg.part_config()
    loss_fn = embedding_alignment_loss(ctx.teacher) if ctx.task == "feature-extraction" else None
    if cfg.method == "importance":
        model, plan = prune_heads_by_importance(
            ctx.model, ctx.batches(cfg.num_batches), config, loss_fn=loss_fn
        )
    else:
        from ..arch import num_layers

        gen = torch.Generator().manual_seed(ctx.seed)
        scores = torch.rand(num_layers(ctx.model), num_heads(ctx.model), generator=gen)  # (L, H)
        group = num_heads(ctx.model) // num_kv_heads(ctx.model)
        plan = select_heads(scores, cfg.fraction, cfg.uniform, group, cfg.whole_groups)
        model = prune(ctx.model, plan, export=cfg.export)
    del head_importance  # imported for the docs reader: importance is computed by prune_heads_by_importance
    pruned = {str(k): [int(h) for h in v] for k, v in plan.items()}
    return model, {
        "pruned_heads": pruned,
        "num_pruned": sum(len(v) for v in pruned.values()),
        "export": cfg.export,
    }


def sparsify(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    from ..surgery.sparsity import sparsify as run
    from ..surgery.sparsity import sparsity_report

    calibration = ctx.batches(cfg.num_batches) if cfg.method == "wanda" else None
    model = run(ctx.model, calibration=calibration, config=cfg.part_config())
    report = sparsity_report(model)
    return model, {"target_sparsity": float(report.sparsity), "model_sparsity": float(report.model_sparsity)}


def quantize_int8(ctx: StageContext, cfg) -> tuple[torch.nn.Module, dict]:
    from ..surgery.int8 import quantize_int8 as quantize

    calibration = ctx.batches(cfg.num_batches) if cfg.needs_calibration else None
    model = quantize(ctx.model, cfg.part_config(calibration=calibration))
    n = sum(1 for m in model.modules() if type(m).__name__ == "Int8Linear")
    return model, {"int8_modules": n, "mode": cfg.mode}


STAGE_FUNCTIONS = {
    "student_from_teacher": student_from_teacher,
    "drop_layers": drop_layers,
    "distill": distill,
    "prune_heads": prune_heads,
    "sparsify": sparsify,
    "quantize_int8": quantize_int8,
}


def run_stage(ctx: StageContext, name: str, cfg) -> dict:
    """Run one stage on ``ctx.model`` (replaced by the result) and return its record."""
    logger.info("stage %s: %s", name, cfg)
    model, record = STAGE_FUNCTIONS[name](ctx, cfg)
    ctx.model = model.eval()
    record = {"stage": name, **record}
    ctx.records.append(record)
    return record
