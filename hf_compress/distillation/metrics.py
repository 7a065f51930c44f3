"""Offline evaluation of a distillation run: loss terms, perplexity (causal LMs), accuracy (classifiers), inside
the Trainer's own evaluation contract.

:class:`DistillationEvalMixin` overrides only ``prediction_step`` and ``evaluation_loop``, so ``evaluate()`` and
``predict()`` stay the stock ones: ``compute_metrics`` (and ``preprocess_logits_for_metrics``,
``batch_eval_metrics``, ``include_for_metrics``) get the student's logits and the labels, ``eval_runtime`` /
``eval_samples_per_second`` are reported, metrics reach ``log``, callbacks and ``metric_for_best_model``. On top,
each batch's distillation sums are accumulated per process and reduced once, so every term is normalised by the
valid items of the whole eval set, as in training (the stock mean of per-batch losses is replaced). Plain code on
tensors: no metric script is fetched.
"""

from __future__ import annotations

import torch

from . import losses
from .masks import item_masks

__all__ = ["DistillationEvalMixin", "EvalSums"]

_KEYS = ("kd", "hidden", "task", "embedding", "n_logits", "n_hidden", "n_task", "n_sequences", "s_nll", "t_nll",
         "n_nll", "s_correct", "t_correct", "agree", "n_examples")


_TERMS = ("kd", "hidden", "task", "embedding")  # each term and its count key below
_COUNTS = ("n_logits", "n_hidden", "n_task", "n_sequences")


def _alphas(args) -> tuple[float, ...]:
    return args.alpha_logits, args.alpha_hidden, args.alpha_task, args.alpha_embedding


def _weighted(args, parts: dict) -> float:
    return sum(alpha * parts[term] for term, alpha in zip(_TERMS, _alphas(args)))


class EvalSums:
    """Sums of one evaluation over its batches (this process); :meth:`metrics` reduces them over processes."""

    def __init__(self):
        self.sums = dict.fromkeys(_KEYS, 0.0)

    def add(self, trainer, inputs: dict, terms: dict) -> float:
        """Adds one batch; returns that batch's weighted loss (what the stock loop averages, then we replace)."""
        s = self.sums
        logit_mask, hidden_mask, n_task = item_masks(inputs, trainer.task)
        batch = {key: float(terms[key]) for key in _TERMS}
        counts = (float(logit_mask.sum()), float(hidden_mask.sum()), float(n_task), float(hidden_mask.any(1).sum()))
        for key, n, name in zip(_TERMS, counts, _COUNTS):
            s[key] += batch[key]
            s[name] += n
        labels = inputs.get("labels")
        if trainer.causal:
            targets = (labels if labels is not None else inputs["input_ids"])[:, 1:]  # (B, T-1)
            mask = targets.ne(-100)
            if inputs.get("attention_mask") is not None:
                mask &= inputs["attention_mask"][:, 1:].bool()
            for who, out in (("s_nll", terms["student"]), ("t_nll", terms["teacher"])):
                s[who] += float(losses.token_cross_entropy(out.logits[:, :-1], targets.clamp(min=0), mask))
            s["n_nll"] += float(mask.sum())
        elif trainer.task == "sequence-classification":
            s_pred, t_pred = terms["student"].logits.argmax(-1), terms["teacher"].logits.argmax(-1)  # (B,)
            s["agree"] += float((s_pred == t_pred).sum())
            s["n_examples"] += s_pred.numel()
            if labels is not None:
                s["s_correct"] += float((s_pred == labels).sum())
                s["t_correct"] += float((t_pred == labels).sum())
        return _weighted(trainer.args, {k: batch[k] / max(n, 1.0) for k, n in zip(_TERMS, counts)})

    def metrics(self, trainer, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_loss`` (the weighted mix), ``{prefix}_loss_kd|hidden|task|embedding`` (unweighted, for the terms whose
        alpha is > 0), ``{prefix}_student_perplexity`` / ``_teacher_perplexity`` (causal LMs: exp of the mean
        next-token NLL over label tokens, or attended tokens without labels) and ``{prefix}_accuracy`` /
        ``_teacher_accuracy`` / ``_teacher_agreement`` (sequence classifiers). Every process must call it."""
        totals = torch.tensor([self.sums[k] for k in _KEYS], dtype=torch.float64)
        if trainer.accelerator.num_processes > 1:
            totals = trainer.accelerator.reduce(totals.to(trainer.args.device), "sum").cpu()
        s = dict(zip(_KEYS, totals.tolist()))
        a, p = trainer.args, prefix
        parts = {term: s[term] / max(s[n], 1) for term, n in zip(_TERMS, _COUNTS)}
        metrics = {f"{p}_loss": _weighted(a, parts)}
        for term, alpha in zip(_TERMS, _alphas(a)):
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


def _outputs_for_metrics(trainer, outputs, ignore_keys, asked_hidden: bool):
    """The student outputs the stock ``prediction_step`` would hand to ``compute_metrics``: every field but the
    loss and ``ignore_keys`` (and the hidden states that only distillation asked for); one field unwrapped."""
    config = getattr(trainer.model, "config", None)
    if ignore_keys is None:
        ignore_keys = getattr(config, "keys_to_ignore_at_inference", ["past_key_values"]) if config else []
    skip = set(ignore_keys) | {"loss"}
    if asked_hidden and not getattr(config, "output_hidden_states", False):
        skip.add("hidden_states")
    fields = tuple(v.detach() if torch.is_tensor(v) else v for k, v in outputs.items() if k not in skip)
    return fields[0] if len(fields) == 1 else fields


class DistillationEvalMixin:
    """``prediction_step`` / ``evaluation_loop`` of :class:`~hf_compress.DistillationTrainer` (see the module
    docstring). Needs the trainer's ``_terms``, ``layer_pairs``, ``embedding_pair``, ``causal`` and ``task``."""

    _eval_sums: EvalSums | None = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        names = self.label_names
        has_labels = bool(names) and all(inputs.get(k) is not None for k in names)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            terms = self._terms(model, inputs)
        sums = self._eval_sums if self._eval_sums is not None else EvalSums()
        loss = torch.tensor(sums.add(self, inputs, terms), device=self.args.device)
        if prediction_loss_only:
            return loss, None, None
        labels = None
        if has_labels:
            labels = tuple(inputs[k].detach() for k in names)
            labels = labels[0] if len(labels) == 1 else labels
        asked_hidden = bool(self.layer_pairs) or self.embedding_pair is not None
        return loss, _outputs_for_metrics(self, terms["student"], ignore_keys, asked_hidden), labels

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        self._eval_sums = EvalSums()
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            ours = self._eval_sums.metrics(self, metric_key_prefix)
            loss_key = f"{metric_key_prefix}_loss"  # ours replaces the stock mean; a user's own key wins
            output.metrics.update({k: v for k, v in ours.items() if k == loss_key or k not in output.metrics})
        finally:
            self._eval_sums = None
        return output
