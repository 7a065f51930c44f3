"""Offline evaluation of a distillation run: loss terms, perplexity (causal LMs), accuracy (classifiers).

Plain code on tensors (no metric script is fetched from the Hub). Sums are accumulated per process and reduced
once, so every term is normalised by the valid items of the whole eval set, as in training.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from . import losses
from .masks import item_masks

__all__ = ["distillation_metrics"]


def distillation_metrics(trainer, dataloader, prefix: str = "eval") -> dict[str, float]:
    """``{prefix}_loss`` (the weighted mix), ``{prefix}_loss_kd|hidden|task`` (unweighted, for the terms whose
    alpha is > 0), ``{prefix}_student_perplexity`` / ``_teacher_perplexity`` (causal LMs: exp of the mean
    next-token NLL over label tokens, or attended tokens without labels) and ``{prefix}_accuracy`` /
    ``_teacher_accuracy`` / ``_teacher_agreement`` (sequence classifiers)."""
    model = trainer.model
    model.eval()
    keys = ("kd", "hidden", "task", "n_logits", "n_hidden", "n_task", "s_nll", "t_nll", "n_nll",
            "s_correct", "t_correct", "agree", "n_examples")
    sums = dict.fromkeys(keys, 0.0)
    bar = tqdm(dataloader, desc="distillation eval", leave=False,
               disable=trainer.args.disable_tqdm or not trainer.is_local_process_zero())
    for batch in bar:
        inputs = trainer._prepare_inputs(batch)
        with torch.no_grad():
            terms = trainer._terms(model, inputs)
        logit_mask, hidden_mask, n_task = item_masks(inputs, trainer.task)
        for key in ("kd", "hidden", "task"):
            sums[key] += float(terms[key])
        sums["n_logits"] += float(logit_mask.sum())
        sums["n_hidden"] += float(hidden_mask.sum())
        sums["n_task"] += n_task
        labels = inputs.get("labels")
        if trainer.causal:
            targets = (labels if labels is not None else inputs["input_ids"])[:, 1:]  # (B, T-1)
            mask = targets.ne(-100)
            if inputs.get("attention_mask") is not None:
                mask &= inputs["attention_mask"][:, 1:].bool()
            for who, out in (("s_nll", terms["student"]), ("t_nll", terms["teacher"])):
                sums[who] += float(losses.token_cross_entropy(out.logits[:, :-1], targets.clamp(min=0), mask))
            sums["n_nll"] += float(mask.sum())
        elif trainer.task == "sequence-classification":
            s_pred = terms["student"].logits.argmax(-1)
            t_pred = terms["teacher"].logits.argmax(-1)
            sums["agree"] += float((s_pred == t_pred).sum())
            sums["n_examples"] += s_pred.numel()
            if labels is not None:
                sums["s_correct"] += float((s_pred == labels).sum())
                sums["t_correct"] += float((t_pred == labels).sum())
    totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if trainer.accelerator.num_processes > 1:
        totals = trainer.accelerator.reduce(totals.to(trainer.args.device), "sum").cpu()
    s = dict(zip(keys, totals.tolist()))
    a = trainer.args
    parts = {"kd": s["kd"] / max(s["n_logits"], 1), "hidden": s["hidden"] / max(s["n_hidden"], 1),
             "task": s["task"] / max(s["n_task"], 1)}
    p = prefix
    metrics = {f"{p}_loss": a.alpha_logits * parts["kd"] + a.alpha_hidden * parts["hidden"]
               + a.alpha_task * parts["task"]}
    for term, alpha in (("kd", a.alpha_logits), ("hidden", a.alpha_hidden), ("task", a.alpha_task)):
        if alpha > 0:
            metrics[f"{p}_loss_{term}"] = parts[term]
    if s["n_nll"] > 0:
        metrics[f"{p}_student_perplexity"] = float(torch.tensor(s["s_nll"] / s["n_nll"]).exp())
        metrics[f"{p}_teacher_perplexity"] = float(torch.tensor(s["t_nll"] / s["n_nll"]).exp())
    if s["n_examples"] > 0:
        metrics[f"{p}_teacher_agreement"] = s["agree"] / s["n_examples"]
        if s["n_task"] > 0:
            metrics[f"{p}_accuracy"] = s["s_correct"] / s["n_examples"]
            metrics[f"{p}_teacher_accuracy"] = s["t_correct"] / s["n_examples"]
    return metrics
