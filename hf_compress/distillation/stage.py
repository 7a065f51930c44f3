"""Recipe stage ``distill``: knowledge distillation from the teacher (the model as loaded)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

from ..core.checks import check_positive
from ..errors import RecipeError
from .options import OPTIONS, check_options

__all__ = ["DistillConfig", "distill_stage", "check_distill_for_task"]


@dataclass
class DistillConfig:
    """Knowledge distillation from the teacher (the model as loaded) into the current model. The distillation
    fields (:data:`~.options.OPTIONS`) are checked by :class:`~.args.DistillationArguments`' own check."""

    max_steps: int = 100
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    temperature: float = 2.0
    alpha_logits: float | None = None  # None: 1.0 when the task has logits, else 0.0
    alpha_hidden: float = 0.0
    alpha_task: float = 0.0
    alpha_embedding: float = 0.0  # 1 - cosine of the mean-pooled final hidden states (sentence embeddings)
    alpha_relation: float = 0.0  # in-batch cosine matrices of those embeddings, student vs teacher
    relation_loss: str = "mse"  # mse per pair i != j, or kl per row (listwise, relation_temperature)
    relation_temperature: float = 0.05
    logit_loss: str = "forward_kl"
    jsd_beta: float = 0.5
    hidden_loss: str = "mse"
    layer_map: str | list = "uniform"
    logit_chunk_size: int = 0  # causal LMs: logit losses in chunks of this many token rows (0 = off)
    lmbda: float = 0.0  # causal LMs: share of on-policy batches (completions sampled by the student)
    seq_kd: bool = False  # causal LMs: other batches' completions sampled by the teacher
    max_new_tokens: int = 128
    generation_temperature: float = 1.0
    warmup_steps: float = 0  # steps, or a fraction of max_steps when < 1
    weight_decay: float = 0.0
    logging_steps: int = 25
    teacher_cache: str | None = None  # a folder: the teacher's outputs are cached there once, then reused
    top_k: int = 32  # logits kept per token in the teacher cache
    bf16: bool = False  # bf16 autocast while training (about 1.9x faster on AVX512-BF16 CPUs); weights stay fp32

    def __post_init__(self):
        for name in ("max_steps", "learning_rate", "batch_size", "max_length", "logging_steps"):
            check_positive(name, getattr(self, name), RecipeError)
        values = {name: getattr(self, name) for name in OPTIONS}
        if values["alpha_logits"] is None:  # chosen by the task at run time; check_distill_for_task checks it
            values["alpha_logits"] = 1.0
        check_options(values, RecipeError)
        if self.weight_decay < 0:
            raise RecipeError(f"`weight_decay` must be >= 0, got {self.weight_decay!r}")
        if self.warmup_steps < 0:
            raise RecipeError(f"`warmup_steps` must be >= 0, got {self.warmup_steps!r}")
        if not isinstance(self.bf16, bool):
            raise RecipeError(f"`bf16` must be true or false, got {self.bf16!r}")
        check_positive("top_k", self.top_k, RecipeError)
        if self.teacher_cache is not None and not (isinstance(self.teacher_cache, str) and self.teacher_cache):
            raise RecipeError(f"`teacher_cache` must be a folder path or null, got {self.teacher_cache!r}")
        if self.teacher_cache is not None and self.logit_loss == "mse":
            raise RecipeError("`logit_loss` must be forward_kl, reverse_kl or jsd with a teacher_cache (it holds "
                              "top-k logits only), got 'mse'")


def check_distill_for_task(cfg: DistillConfig, task: str) -> str | None:
    """The recipe-level rule: an encoder without a head is distilled on hidden states only."""
    if task == "feature-extraction" and cfg.alpha_logits:
        return (
            "alpha_logits: a feature-extraction model has no logits; set alpha_logits: 0 and alpha_hidden > 0, "
            f"got {cfg.alpha_logits!r}"
        )
    if task == "feature-extraction" and not (cfg.alpha_hidden or cfg.alpha_embedding or cfg.alpha_relation):
        return (
            "alpha_hidden: a feature-extraction model is distilled on hidden states; set alpha_hidden > 0 "
            f"(or alpha_embedding / alpha_relation > 0), got {cfg.alpha_hidden!r}"
        )
    return None


def _max_length(ctx, cfg: DistillConfig) -> int:
    """The recipe's max_length, never past the model's position limit (tiny.yaml: 64 positions)."""
    return min(cfg.max_length, ctx.max_positions or cfg.max_length)


def distill_stage(ctx, cfg: DistillConfig):
    import datasets
    import torch

    from .args import DistillationArguments
    from .trainer import DistillationTrainer

    has_logits = ctx.task != "feature-extraction"
    alpha_logits = cfg.alpha_logits if cfg.alpha_logits is not None else (1.0 if has_logits else 0.0)
    enc = ctx.tokenizer(ctx.texts, truncation=True, max_length=_max_length(ctx, cfg))
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
            alpha_embedding=cfg.alpha_embedding,
            alpha_relation=cfg.alpha_relation,
            relation_loss=cfg.relation_loss,
            relation_temperature=cfg.relation_temperature,
            logit_loss=cfg.logit_loss,
            jsd_beta=cfg.jsd_beta,
            hidden_loss=cfg.hidden_loss,
            layer_map=cfg.layer_map,
            logit_chunk_size=cfg.logit_chunk_size,
            lmbda=cfg.lmbda,
            seq_kd=cfg.seq_kd,
            max_new_tokens=cfg.max_new_tokens,
            generation_temperature=cfg.generation_temperature,
            warmup_steps=cfg.warmup_steps,
            weight_decay=cfg.weight_decay,
            logging_steps=cfg.logging_steps,
            bf16=cfg.bf16,
            save_strategy="no",
            report_to=[],
            seed=ctx.seed,
            use_cpu=not torch.cuda.is_available(),
            disable_tqdm=False,
            remove_unused_columns=False,
        )
        source = {"teacher_model": ctx.teacher}
        if cfg.teacher_cache:
            source = {"teacher_cache": _cache_once(ctx, cfg, dataset, alpha_logits)}
        trainer = DistillationTrainer(
            model=ctx.model,
            args=args,
            train_dataset=dataset,
            processing_class=ctx.tokenizer,
            **source,
        )
        result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    model = trainer.model.eval()
    return model, {
        "steps": int(result.global_step),
        "train_loss": float(result.training_loss),
        "first_logged_loss": losses[0] if losses else None,
        "last_logged_loss": losses[-1] if losses else None,
        **({"teacher_cache": cfg.teacher_cache} if cfg.teacher_cache else {}),
    }


def _cache_once(ctx, cfg: DistillConfig, dataset, alpha_logits: float) -> str:
    """Write the teacher cache for this stage's data, or reuse the folder when it already holds it (the
    fingerprint check refuses a folder written for another teacher, tokenizer, data or max_length)."""
    from ..arch import num_layers
    from .cache import cache_teacher_outputs
    from .layer_map import resolve_layer_pairs

    layers = []
    if cfg.alpha_hidden > 0:
        pairs = resolve_layer_pairs(cfg.layer_map, num_layers(ctx.model), num_layers(ctx.teacher))
        layers = sorted({t for _, t in pairs})
    if cfg.alpha_embedding > 0 or cfg.alpha_relation > 0:  # both pool the teacher's final hidden states
        layers = sorted({*layers, num_layers(ctx.teacher)})
    return cache_teacher_outputs(ctx.teacher, dataset, cfg.teacher_cache, top_k=cfg.top_k if alpha_logits else 0,
                                 hidden_layers=layers, max_length=_max_length(ctx, cfg), batch_size=cfg.batch_size,
                                 tokenizer=ctx.tokenizer)
