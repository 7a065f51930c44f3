"""DistillationTrainer: a transformers ``Trainer`` whose loss mixes logit, hidden-state and task losses.

Reduction rule. For one optimizer step (one gradient-accumulation window, all processes together)::

    loss = alpha_logits * sum(kd over valid logit positions)    / N_logits
         + alpha_hidden * sum(hidden over attended tokens)      / N_hidden   (mean over layer pairs)
         + alpha_task   * sum(model's own loss over its items)   / N_task
         + alpha_embedding * sum(1 - cos(mean-pooled final hidden states)) / N_sequences
         + alpha_relation * sum(relation over each micro-batch's pairs / rows) / N_relation

where each ``N`` counts the valid items of the whole window (every micro-batch, and every process when
``average_tokens_across_devices`` is on, the default). Valid logit positions: causal LMs shift like the model's
own loss (position i predicts token i+1) and keep ``attention_mask[:, 1:] & labels[:, 1:] != -100``; other
token heads keep ``attention_mask & labels != -100`` (labels only when present); sequence classifiers count
examples. Hidden positions are the attended tokens. So batch 8 and batch 4 x accumulation 2 give equal gradients.

The relation term (``relation_loss``: ``mse`` per ordered pair i != j of the B x B cosine matrices of the
mean-pooled final hidden states, or ``kl`` per row over the other sequences, ``relation_temperature``) pairs
sequences **within a micro-batch** only, so it depends on how a window is split: batch 8 and 4 x 2 differ.
``N_relation`` is the window's total pair (``mse``) or row (``kl``) count over its micro-batches, so a
window's term is the mean over all its pairs (rows). No projection: the matrices do not depend on the width.
"""

from __future__ import annotations

import functools
import itertools
import random
import logging
import os
import shutil
import tempfile

import torch
import torch.distributed as dist
from transformers import Trainer, TrainerCallback

from ..arch import num_layers
from ..core.folders import publish_folder, write_manifest
from ..errors import CheckpointError, HfCompressError
from . import losses
from .args import DistillationArguments
from .cache_format import ROW_COLUMN
from .finite import NonFiniteGuard
from .layer_map import HiddenProjections, hidden_width, resolve_layer_pairs
from .chunked import chunked_causal_terms, lm_head_of
from .fused import fused_causal_terms, fused_supported_for
from .generation import generate_completions
from .masks import WindowCounts, item_masks, window_totals
from .metrics import DistillationEvalMixin
from .peft_student import base_of, check_student, teacher_source
from .cached_source import EvalCaches, cached_teacher_for
from .teacher import load_teacher, shared_vocab

__all__ = ["DistillationTrainer", "WindowCounts"]

logger = logging.getLogger(__name__)
_TERMS = ("loss_kd", "loss_hidden", "loss_task", "loss_embedding", "loss_relation")


def _check_relation_cache(cached_layers, final: int, alpha: float) -> None:
    """The relation term reads the teacher's final hidden states: a cache without them is refused up front."""
    if final not in cached_layers:
        raise HfCompressError(
            f"`alpha_relation` must be 0 with a teacher_cache without the teacher's final hidden states "
            f"(layer {final}): cache with hidden_layers including {final}, or pass teacher_model; got "
            f"alpha_relation={alpha} with hidden_layers={list(cached_layers)}")


class _ZeroProjectionGrads(TrainerCallback):
    """The Trainer zeroes only the student's gradients after each optimizer step; do the projections too."""

    def __init__(self, projections):
        self.projections = projections

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.projections.zero_grad(set_to_none=True)


class DistillationTrainer(DistillationEvalMixin, Trainer):
    """Distil ``teacher_model`` into ``model`` (see the module docstring for the exact loss).

    The teacher object is changed in place (frozen, eval mode, moved to the student's device and dtype), as the
    Trainer does with the student; pass a copy to keep the original as it was. ``evaluate()`` / ``predict()`` are
    the stock ones (``compute_metrics`` included) with the distillation terms added (``metrics.py``). With
    ``teacher_cache``, an eval set's terms come from ``eval_teacher_cache`` (its rows matched by index, as in
    training); an eval set without one is evaluated on the student's task loss (``cached_source.EvalCaches``).
    """

    loss_is_scaled_for_ga = True  # compute_loss already divides by the whole window's counts

    def __init__(self, model=None, teacher_model=None, args: DistillationArguments | None = None,
                 teacher_trust_remote_code: bool = False, teacher_cache=None, teacher_tokenizer=None,
                 eval_teacher_cache=None, **kwargs):
        if not isinstance(args, DistillationArguments):
            raise HfCompressError(f"`args` must be a DistillationArguments, got {type(args).__name__}")
        if (teacher_model is None) == (teacher_cache is None):
            raise HfCompressError("pass exactly one of `teacher_model` (a model, a folder or a repo id) and "
                                  f"`teacher_cache` (a cache_teacher_outputs folder), got "
                                  f"{'both' if teacher_model is not None else 'neither'}")
        if kwargs.get("model_init") is not None or kwargs.get("compute_loss_func") is not None:
            raise HfCompressError("DistillationTrainer does not support `model_init` or `compute_loss_func`")
        if eval_teacher_cache is not None and teacher_cache is None:
            raise HfCompressError("`eval_teacher_cache` must be None with a live teacher_model (it evaluates with the "
                                  "teacher itself), got a cache; pass teacher_cache for training from a cache")
        check_student(model)
        self._eval_caches, self._eval_teacher = None, None
        if teacher_cache is not None:  # checked before the Trainer is built: it needs the row column
            given = kwargs.get("train_dataset")
            source, task, t_shape, kwargs["train_dataset"] = cached_teacher_for(
                teacher_cache, base_of(model), args, given, kwargs.get("processing_class"))
            self._eval_caches = EvalCaches(base_of(model), args, source, kwargs.get("processing_class"),
                                           (given, kwargs["train_dataset"]))
            if eval_teacher_cache is not None:  # eval rows matched by index, checked like the training rows
                kwargs["eval_dataset"] = self._eval_caches.add_all(eval_teacher_cache, kwargs.get("eval_dataset"))
        super().__init__(model=model, args=args, **kwargs)
        self.add_callback(NonFiniteGuard())  # diverged weights stop the run, naming the step
        student = base_of(self.model)  # a PEFT student: the transformers model inside it (peft_student.py)
        # under FSDP / DeepSpeed the Trainer has not placed the student yet: the teacher (replicated, never
        # wrapped or trained) and the projections go to this process's device, where the shards will run
        sharded = self.is_fsdp_enabled or self.is_deepspeed_enabled
        device = self.args.device if sharded else next(student.parameters()).device
        if teacher_cache is None:
            teacher = load_teacher(teacher_model, student, trust_remote_code=teacher_trust_remote_code)
            source, task, self.teacher = teacher_source(self.model, teacher, args.alpha_logits > 0, device)
            t_shape = (num_layers(self.teacher), hidden_width(self.teacher))
        else:
            self.teacher = None
        self.teacher_source, self.task = source, task
        self.causal = self.task == "causal-lm"
        t_vocab = getattr(self.teacher.config, "vocab_size", None) if self.teacher is not None else None
        common = shared_vocab(getattr(student.config, "vocab_size", None), t_vocab, kwargs.get("processing_class"),
                              teacher_tokenizer)
        self.vocab = common if self.task in ("causal-lm", "masked-lm") else None  # logits cut to the common ids
        if args.logit_chunk_size and not self.causal:
            raise HfCompressError(f"`logit_chunk_size` must be 0 for a {self.task} student (chunking is for causal "
                                  f"LMs), got {args.logit_chunk_size}")
        if args.logit_chunk_size:
            lm_head_of(student)  # an nn.Linear head, or a clear error now
            if not getattr(source, "chunkable", False):
                raise HfCompressError(f"`logit_chunk_size` must be 0 with a {type(source).__name__} teacher (it "
                                      f"returns logits only), got {args.logit_chunk_size}")
        self._generating = args.lmbda > 0 or args.seq_kd
        for name in ("lmbda", "seq_kd"):
            if getattr(args, name) and (not self.causal or teacher_cache is not None):
                why = f"a {self.task} student" if not self.causal else "a teacher_cache (new tokens need a live teacher)"
                raise HfCompressError(f"`{name}` must be {'0' if name == 'lmbda' else 'False'} with {why}: "
                                      f"sampling completions needs a causal LM, got {getattr(args, name)!r}")
        self._policy_rng, self._generations = random.Random(args.seed), 0
        self.layer_pairs: list[tuple[int, int]] = []
        self.projections = None
        # the sentence-embedding term pools the final hidden states of both (a projection when widths differ)
        self.embedding_pair = (num_layers(student), t_shape[0]) if args.alpha_embedding > 0 else None
        if args.alpha_hidden > 0:
            self.layer_pairs = resolve_layer_pairs(args.layer_map, num_layers(student), t_shape[0],
                                                   args.include_embeddings)
        pairs = list(dict.fromkeys(self.layer_pairs + ([self.embedding_pair] if self.embedding_pair else [])))
        # the relation term compares in-batch cosine matrices of the final hidden states: no projection
        self.relation_pair = (num_layers(student), t_shape[0]) if args.alpha_relation > 0 else None
        read = {t for _, t in pairs} | ({t_shape[0]} if self.relation_pair else set())
        self._teacher_layers = sorted(read)  # the teacher hidden states every step reads
        if teacher_cache is not None and read:
            if self.relation_pair:
                _check_relation_cache(source.meta["hidden_layers"], t_shape[0], args.alpha_relation)
            source.check_hidden_layers(self._teacher_layers)
            self._eval_caches.check_hidden_layers(self._teacher_layers)
        if pairs:
            with torch.random.fork_rng(devices=[]):  # same initial projections in every process
                torch.manual_seed(args.seed)
                self.projections = HiddenProjections(pairs, hidden_width(student), t_shape[1])
            self.projections.to(device=device, dtype=student.dtype)
            self._register_projection_grad_sync()
            self.add_callback(_ZeroProjectionGrads(self.projections))
        self._relation_loss = losses.relation_mse if args.relation_loss == "mse" else functools.partial(
            losses.relation_kl, temperature=args.relation_temperature)
        self._logit_loss = {
            "forward_kl": functools.partial(losses.forward_kl, temperature=args.temperature),
            "reverse_kl": functools.partial(losses.reverse_kl, temperature=args.temperature),
            "jsd": functools.partial(losses.generalized_jsd, temperature=args.temperature, beta=args.jsd_beta),
            "mse": losses.logit_mse,
        }[args.logit_loss]
        self._fusable = fused_supported_for(self._logit_loss, cached=teacher_cache is not None)
        self._term_sums = torch.zeros(len(_TERMS), dtype=torch.float64)
        self._windows_seen, self._last_window = 0, None

    # ---- counting valid items ------------------------------------------------------------------------
    def _window_counts(self, batches: list, reduce: bool = True) -> WindowCounts:
        totals = window_totals(batches, self.task, self.args.relation_loss)
        world, factor = self.accelerator.num_processes, 1.0
        if reduce and world > 1 and self.args.average_tokens_across_devices:
            totals = self.accelerator.reduce(totals.to(self.args.device), "sum").cpu()
            factor = float(world)
        return WindowCounts(*totals.clamp(min=1).unbind(), world_factor=factor)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        if ROW_COLUMN not in self._signature_columns:  # the cache row of each example must reach the batch
            self._signature_columns.append(ROW_COLUMN)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The window's micro-batches and their :class:`WindowCounts` (replaces transformers' label count)."""
        batches = list(itertools.islice(epoch_iterator, num_batches))
        if self._generating:  # on-policy / sequence-level KD: completions first, so the counts see them
            batches = [self._sampled(b) for b in batches]
        return batches, (self._window_counts(batches) if batches else None)

    def _sampled(self, batch: dict) -> dict:
        """This micro-batch with completions from the student (probability lmbda), else the teacher (seq_kd)."""
        args = self.args
        if self._policy_rng.random() < args.lmbda:
            sampler = self.accelerator.unwrap_model(self.model)
        elif args.seq_kd:
            sampler = self.teacher
        else:
            return batch
        self._generations += 1
        return generate_completions(sampler, self._prepare_inputs(batch), args.max_new_tokens,
                                    args.generation_temperature, seed=args.seed + self._generations)

    # ---- the loss ------------------------------------------------------------------------------------------
    def _terms(self, model, inputs: dict, counts: WindowCounts | None = None) -> dict:
        """Unnormalised sums of the terms for one micro-batch (task: model mean x its item count).

        With ``logit_chunk_size`` (causal LMs, training with gradients, ``counts`` given) the KD and task sums
        come from :mod:`.chunked` and ``head_loss`` holds their weighted, differentiable sum.
        """
        args = self.args
        labels = inputs.get("labels")
        logit_mask, hidden_mask, n_task = item_masks(inputs, self.task)
        source = self.teacher_source  # None: evaluating a teacher-cache run on rows with no cache (task loss only)
        use_task = (args.alpha_task > 0 or source is None) and labels is not None and n_task > 0
        want_hidden = self._wants_hidden() and source is not None
        train_step = counts is not None and model.training and torch.is_grad_enabled()
        chunk = bool(args.logit_chunk_size) and train_step
        # causal LM, full logits: KD + task cross-entropy in one softmax pass with its own gradient (fused.py)
        fused = train_step and not chunk and self.causal and args.alpha_logits > 0 and self._fusable
        student_inputs = {k: v for k, v in inputs.items()
                          if (use_task and not (chunk or fused) or k != "labels") and k != ROW_COLUMN}
        extra = {"logits_to_keep": 1, "output_hidden_states": True} if chunk else {}
        s_out = model(**student_inputs, **{"output_hidden_states": want_hidden, **extra})
        t_out = None if source is None else source(inputs, self._teacher_layers,
                                                   **({"final_hidden": True} if chunk else {}))
        zero = torch.zeros((), device=hidden_mask.device)
        out = {"kd": zero, "hidden": zero, "task": zero, "embedding": zero, "relation": zero,
               "student": s_out, "teacher": t_out}
        if chunk or fused:
            wf = counts.world_factor
            coeffs = torch.tensor([args.alpha_logits / counts.logits.item() * wf,
                                   (args.alpha_task / counts.task.item() * wf) if use_task else 0.0])
        if fused:
            out["head_loss"], out["kd"], out["task"] = fused_causal_terms(
                s_out.logits, t_out, logit_mask, labels if use_task else None, self._logit_loss, coeffs,
                vocab=self.vocab)
        elif chunk:
            out["head_loss"], out["kd"], out["task"] = chunked_causal_terms(
                s_out.hidden_states[-1], lm_head_of(model), t_out, logit_mask, labels, self._logit_loss, coeffs,
                args.logit_chunk_size, vocab=self.vocab, into_grad=self._head_grad_in_place())
        elif args.alpha_logits > 0 and t_out is not None:
            cut = (lambda x: x[:, :-1]) if self.causal else (lambda x: x)  # (B, T-1, V): i predicts i+1
            if t_out.logits is not None:  # a teacher with padding rows: the common ids only
                s_logits, t_logits = cut(s_out.logits)[..., :self.vocab], cut(t_out.logits)[..., :self.vocab]
            else:  # cached top-k: k buckets + one tail bucket on both sides
                s_logits, t_logits = losses.topk_buckets(cut(s_out.logits), cut(t_out.topk_ids),
                                                         cut(t_out.topk_logits), cut(t_out.tail_logsumexp))
            out["kd"] = self._logit_loss(s_logits, t_logits, mask=logit_mask, reduction="sum")
        if self.embedding_pair is not None and t_out is not None:
            pair = self.embedding_pair
            out["embedding"] = losses.embedding_cosine(self.projections(s_out.hidden_states[pair[0]], pair),
                                                       t_out.hidden_states[pair[1]], hidden_mask, reduction="sum")
        if self.relation_pair is not None and t_out is not None:  # pairs within this micro-batch
            s_last, t_last = self.relation_pair
            out["relation"] = self._relation_loss(s_out.hidden_states[s_last], t_out.hidden_states[t_last],
                                                  hidden_mask, reduction="sum")
        if self.layer_pairs and t_out is not None:
            total = zero
            for pair in self.layer_pairs:
                h_s = self.projections(s_out.hidden_states[pair[0]], pair)  # (B, T, d_T)
                h_t = t_out.hidden_states[pair[1]]  # (B, T, d_T)
                if args.hidden_loss in ("mse", "mse+cosine"):
                    total = total + losses.hidden_mse(h_s, h_t, hidden_mask, reduction="sum")
                if args.hidden_loss in ("cosine", "mse+cosine"):
                    total = total + losses.hidden_cosine(h_s, h_t, hidden_mask, reduction="sum")
            out["hidden"] = total / len(self.layer_pairs)
        if use_task and not (chunk or fused):
            out["task"] = s_out.loss.float() * n_task  # the model's loss is a mean over its n_task items
        return out

    def _wants_hidden(self) -> bool:
        """Whether the terms read hidden states (the student is run with ``output_hidden_states``)."""
        return bool(self.layer_pairs) or self.embedding_pair is not None or self.relation_pair is not None

    def _head_grad_in_place(self) -> bool:
        """Chunked losses may add the LM head's gradient into its existing ``.grad`` during the forward pass:
        one process (no DDP gradient hooks), no loss scaler, no FSDP / DeepSpeed (the backward is unscaled)."""
        acc = self.accelerator
        return (acc.num_processes == 1 and getattr(acc, "scaler", None) is None and not self.is_fsdp_enabled
                and not self.is_deepspeed_enabled)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        counts = num_items_in_batch
        if not isinstance(counts, WindowCounts):  # called outside the training loop: this batch is the window
            counts = self._window_counts([inputs], reduce=False)
        terms = self._terms(model, inputs, counts)
        a = self.args
        parts = torch.stack([terms["kd"] / counts.logits.item(), terms["hidden"] / counts.hidden.item(),
                             terms["task"] / counts.task.item(), terms["embedding"] / counts.sequences.item(),
                             terms["relation"] / counts.relation.item()])
        weights = torch.tensor(a.term_alphas, device=parts.device)
        loss = (parts * weights).sum() * counts.world_factor
        if "head_loss" in terms:  # chunked / fused: KD and task are already weighted (and differentiable) in head_loss
            rest = parts[1] * a.alpha_hidden + parts[3] * a.alpha_embedding + parts[4] * a.alpha_relation
            loss = terms["head_loss"] + rest * counts.world_factor
        if model.training:
            if counts is not self._last_window:
                self._windows_seen, self._last_window = self._windows_seen + 1, counts
            scale = counts.world_factor / self.accelerator.num_processes  # sum over processes -> global value
            self._term_sums += parts.detach().double().cpu() * scale
        return (loss, terms["student"]) if return_outputs else loss

    def log(self, logs: dict, start_time=None) -> None:
        """Adds ``loss_kd``/``_hidden``/``_task``/``_embedding``/``_relation`` (unweighted, averaged since the
        last log) to train logs, for the terms whose alpha is > 0."""
        if "loss" in logs and self._windows_seen > 0:
            sums = self._term_sums.clone()
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums.to(self.args.device), "sum").cpu()
            for name, value, alpha in zip(_TERMS, sums.tolist(), self.args.term_alphas):
                if alpha > 0:
                    logs[name] = value / self._windows_seen
            self._term_sums.zero_()
            self._windows_seen = 0
        super().log(logs, start_time)

    # ---- projections: optimizer, gradient sync, clipping, saving, resuming --------------------------------
    def _projection_params(self) -> list:
        return [] if self.projections is None else list(self.projections.parameters())

    def _register_projection_grad_sync(self) -> None:
        """Projections are outside the DDP-wrapped student: average their gradients like DDP does."""
        if self.accelerator.num_processes == 1 or not dist.is_initialized():
            return

        def average(param):
            if self.accelerator.sync_gradients:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)  # gloo has no AVG
                param.grad.div_(self.accelerator.num_processes)

        for param in self._projection_params():
            param.register_post_accumulate_grad_hook(average)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        params = self._projection_params()
        if params and fresh:
            optimizer.add_param_group({"params": params, "weight_decay": self.args.weight_decay})
        elif params and not any(p is q for g in optimizer.param_groups for p in g["params"] for q in params[:1]):
            logger.warning("the optimizer passed in does not train the hidden-state projections")
        return optimizer

    def _clip_grad_norm(self, model):
        params = self._projection_params()
        if not params or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return super()._clip_grad_norm(model)
        return self.accelerator.clip_grad_norm_(list(model.parameters()) + params, self.args.max_grad_norm)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A stock HF folder (no projections inside the model file); projections beside it if asked.

        Checkpoint folders (``_internal_call``) always get the projections file, which resuming needs. A public
        save goes to a temporary folder first and is then moved into place (:func:`~..core.folders.publish_folder`:
        a crash leaves the previous model whole; files hf_compress did not write are never replaced).
        """
        output_dir = output_dir or self.args.output_dir
        if _internal_call or self.is_fsdp_enabled or self.is_deepspeed_enabled:
            super().save_model(output_dir, _internal_call=_internal_call)
            if self.projections is not None and self.args.should_save and (_internal_call or self.args.save_projections):
                self.projections.save(output_dir)
            return
        parent = os.path.dirname(os.path.abspath(output_dir))
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".hf_compress-save-") if self.args.should_save else output_dir
        try:
            super().save_model(tmp, _internal_call=True)
            if self.args.should_save:
                if self.projections is not None and self.args.save_projections:
                    self.projections.save(tmp)
                write_manifest(tmp)
                # by rename; in a folder that holds checkpoints or a user's files only our own files change
                publish_folder(tmp, os.path.abspath(output_dir), CheckpointError)
        finally:
            if self.args.should_save and os.path.isdir(tmp) and tmp != output_dir:
                shutil.rmtree(tmp, ignore_errors=True)
        if self.args.push_to_hub:
            self.push_to_hub(commit_message="Model save", revision=self.args.hub_revision)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if self.projections is not None:
            self.projections.load(resume_from_checkpoint)
