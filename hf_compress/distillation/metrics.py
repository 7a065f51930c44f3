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

import logging

import torch

from ..errors import HfCompressError
from . import losses
from .cache_format import ROW_COLUMN
from .masks import batch_counts

__all__ = ["DistillationEvalMixin", "EvalSums"]

logger = logging.getLogger(__name__)

_KEYS = ("kd", "hidden", "task", "embedding", "relation", "n_logits", "n_hidden", "n_task", "n_sequences",
         "n_relation", "s_nll", "t_nll", "n_nll", "t_missing", "s_correct", "t_correct", "agree",
         "n_examples")


_TERMS = ("kd", "hidden", "task", "embedding", "relation")  # each term and its count key below
_COUNTS = ("n_logits", "n_hidden", "n_task", "n_sequences", "n_relation")


def _weighted(args, parts: dict) -> float:
    return sum(alpha * parts[term] for term, alpha in zip(_TERMS, args.term_alphas))


class EvalSums:
    """Sums of one evaluation over its batches (this process); :meth:`metrics` reduces them over processes."""

    def __init__(self, teacher: bool = True, evaluating: bool = True):
        self.sums = dict.fromkeys(_KEYS, 0.0)
        self.teacher = teacher  # False: no teacher outputs for this data set (eval_loss = the student's task loss)
        self.evaluating = evaluating  # evaluate(), not predict()

    def add(self, trainer, inputs: dict, terms: dict) -> float:
        """Adds one batch; returns that batch's weighted loss (what the stock loop averages, then we replace)."""
        s = self.sums
        batch = {key: float(terms[key]) for key in _TERMS}
        counts = batch_counts(inputs, trainer.task, trainer.args.relation_loss)  # relation: pairs per batch
        for key, n, name in zip(_TERMS, counts, _COUNTS):
            s[key] += batch[key]
            s[name] += n
        labels = inputs.get("labels")
        if trainer.causal:
            targets = (labels if labels is not None else inputs["input_ids"])[:, 1:]  # (B, T-1)
            mask = targets.ne(-100)
            if inputs.get("attention_mask") is not None:
                mask &= inputs["attention_mask"][:, 1:].bool()
            s["s_nll"] += float(losses.token_cross_entropy(terms["student"].logits[:, :-1], targets.clamp(min=0), mask))
            t_nll, missing = _teacher_nll(terms["teacher"], targets, mask)
            s["t_nll"] += t_nll
            s["t_missing"] += missing
            s["n_nll"] += float(mask.sum())
        elif trainer.task == "sequence-classification":
            s_pred, teacher = terms["student"].logits.argmax(-1), terms["teacher"]  # (B,)
            t_pred = None if teacher is None else (teacher.logits.argmax(-1) if teacher.logits is not None
                                                   else teacher.topk_ids[:, 0])  # a cache: sorted top-k
            s["n_examples"] += s_pred.numel()
            if t_pred is not None:
                s["agree"] += float((s_pred == t_pred).sum())
            if labels is not None:
                s["s_correct"] += float((s_pred == labels).sum())
                s["t_correct"] += float((t_pred == labels).sum()) if t_pred is not None else 0.0
        if not self.teacher:
            return batch["task"] / max(counts[2], 1.0)  # only for what the stock loop averages: replaced
        return _weighted(trainer.args, {k: batch[k] / max(n, 1.0) for k, n in zip(_TERMS, counts)})

    def metrics(self, trainer, prefix: str = "eval") -> dict[str, float]:
        """``{prefix}_loss`` (the weighted mix), ``{prefix}_loss_kd|hidden|task|embedding|relation``
        (unweighted, for the terms whose alpha is > 0), ``{prefix}_student_perplexity`` /
        ``_teacher_perplexity`` (causal LMs: exp of the mean next-token NLL over label tokens, or attended
        tokens without labels) and ``{prefix}_accuracy`` /
        ``_teacher_accuracy`` / ``_teacher_agreement`` (sequence classifiers). Every process must call it."""
        totals = torch.tensor([self.sums[k] for k in _KEYS], dtype=torch.float64)
        if trainer.accelerator.num_processes > 1:
            totals = trainer.accelerator.reduce(totals.to(trainer.args.device), "sum").cpu()
        s = dict(zip(_KEYS, totals.tolist()))
        a, p = trainer.args, prefix
        parts = {term: s[term] / max(s[n], 1) for term, n in zip(_TERMS, _COUNTS)}
        if self.teacher:
            metrics, alphas = {f"{p}_loss": _weighted(a, parts)}, zip(_TERMS, a.term_alphas)
        else:  # no teacher outputs for these rows: the student's own task loss, as a plain Trainer reports it
            metrics, alphas = ({f"{p}_loss": parts["task"]}, (("task", 1.0),)) if s["n_task"] else ({}, ())
        for term, alpha in alphas:
            if alpha > 0:
                metrics[f"{p}_loss_{term}"] = parts[term]
        if s["n_nll"] > 0:
            metrics[f"{p}_student_perplexity"] = float(torch.tensor(s["s_nll"] / s["n_nll"]).exp())
            if self.teacher and s["t_missing"] == 0:  # a top-k cache: only when every target is in the top k
                metrics[f"{p}_teacher_perplexity"] = float(torch.tensor(s["t_nll"] / s["n_nll"]).exp())
        if s["n_examples"] > 0:
            if self.teacher:
                metrics[f"{p}_teacher_agreement"] = s["agree"] / s["n_examples"]
            if s["n_task"] > 0:
                metrics[f"{p}_accuracy"] = s["s_correct"] / s["n_examples"]
                if self.teacher:
                    metrics[f"{p}_teacher_accuracy"] = s["t_correct"] / s["n_examples"]
        return metrics


def _teacher_nll(teacher, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
    """(sum of the teacher's next-token NLL over ``mask``, positions it is unknown for). Dense logits: exact; a
    top-k cache: exact where the target is among the k ids (log p = z - logsumexp(top k, tail)), else unknown."""
    if teacher is None:
        return 0.0, float(mask.sum())
    if teacher.logits is not None:
        return float(losses.token_cross_entropy(teacher.logits[:, :-1], targets.clamp(min=0), mask)), 0.0
    ids, z = teacher.topk_ids[:, :-1], teacher.topk_logits[:, :-1].float()  # (B, T-1, k)
    lse = torch.cat([z, teacher.tail_logsumexp[:, :-1, None].float()], -1).logsumexp(-1)
    hit = ids.eq(targets.clamp(min=0)[..., None])
    found = hit.any(-1)
    nll = torch.where(mask & found, lse - (z * hit).sum(-1), 0.0)
    return float(nll.sum()), float((mask & ~found).sum())


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
    docstring). Needs the trainer's ``_terms``, ``_wants_hidden``, ``causal`` and ``task``."""

    _eval_sums: EvalSums | None = None

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        names = self.label_names
        has_labels = bool(names) and all(inputs.get(k) is not None for k in names)
        inputs = self._prepare_inputs(inputs)
        sums = self._eval_sums if self._eval_sums is not None else EvalSums()
        if not sums.teacher and inputs.get("labels") is None:  # no teacher outputs and no task loss
            if sums.evaluating:
                raise HfCompressError("evaluating without cached teacher outputs reports the student's task loss: "
                                      "the eval batches must have `labels`, got none; or pass eval_teacher_cache=<a "
                                      "cache_teacher_outputs folder of this eval_dataset>")
            with torch.no_grad(), self.compute_loss_context_manager():  # predict(): the student's outputs only
                out = model(**{k: v for k, v in inputs.items() if k != ROW_COLUMN})
            return None, (None if prediction_loss_only else _outputs_for_metrics(self, out, ignore_keys, False)), None
        with torch.no_grad(), self.compute_loss_context_manager():
            terms = self._terms(model, inputs)
        loss = torch.tensor(sums.add(self, inputs, terms), device=self.args.device)
        if prediction_loss_only:
            return loss, None, None
        labels = None
        if has_labels:
            labels = tuple(inputs[k].detach() for k in names)
            labels = labels[0] if len(labels) == 1 else labels
        asked_hidden = self._wants_hidden()
        return loss, _outputs_for_metrics(self, terms["student"], ignore_keys, asked_hidden), labels

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix: str = "eval"):
        saved = self.teacher_source
        if getattr(self, "_eval_caches", None) is not None:  # a teacher-cache run: this data set's cache or none
            self.teacher_source = self._eval_teacher
            if self._eval_teacher is None and not getattr(self, "_warned_no_eval_cache", False):
                logger.warning("evaluating a teacher_cache run on rows without cached teacher outputs: %s_loss is the "
                               "student's task loss (pass eval_teacher_cache for the distillation terms)",
                               metric_key_prefix)
                self._warned_no_eval_cache = True
        self._eval_sums = EvalSums(teacher=self.teacher_source is not None, evaluating=description != "Prediction")
        try:
            output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                             metric_key_prefix)
            ours = self._eval_sums.metrics(self, metric_key_prefix)
            loss_key = f"{metric_key_prefix}_loss"  # ours replaces the stock mean; a user's own key wins
            output.metrics.update({k: v for k, v in ours.items() if k == loss_key or k not in output.metrics})
        finally:
            self._eval_sums, self.teacher_source, self._eval_teacher = None, saved, None
        return output

    def _with_eval_cache(self, dataset):
        """A teacher-cache run: ``dataset`` with its cache rows, and that cache kept for the evaluation loop."""
        if getattr(self, "_eval_caches", None) is None or dataset is None:
            return dataset
        matched, self._eval_teacher = self._eval_caches.source_for(dataset)
        return matched

    def get_eval_dataloader(self, eval_dataset=None):
        ds = self.eval_dataset[eval_dataset] if isinstance(eval_dataset, str) else (
            eval_dataset if eval_dataset is not None else self.eval_dataset)
        matched = self._with_eval_cache(ds)
        return super().get_eval_dataloader(eval_dataset if matched is ds else matched)

    def get_test_dataloader(self, test_dataset):
        return super().get_test_dataloader(self._with_eval_cache(test_dataset))
