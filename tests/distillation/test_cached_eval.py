"""Evaluation of a teacher-cache run: with an eval cache it equals the live teacher's evaluation (k = V); without
one it reports the student's task loss; compute_metrics, predict() and dict eval sets keep working."""

import logging

import numpy as np
import pytest
import torch
from distill_fixtures import full_batch, make_args, make_dataset, make_models

from hf_compress import DistillationTrainer, HfCompressError, cache_teacher_outputs


def _caches(tmp_path, teacher, train, evals, k=100, layers=(2, 4)):
    kw = {"top_k": k, "hidden_layers": list(layers), "hidden_dtype": "float32", "progress": False}
    train_cache = cache_teacher_outputs(teacher, train, tmp_path / "train-cache", **kw)
    return train_cache, [cache_teacher_outputs(teacher, ds, tmp_path / f"eval-cache-{i}", **kw)
                         for i, ds in enumerate(evals)]


def _compute_metrics(calls):
    def compute_metrics(pred):
        calls.append(pred)
        return {"mean_logit": float(np.mean(pred.predictions))}

    return compute_metrics


def test_eval_cache_equals_the_live_teacher_evaluation(tmp_path):
    teacher, student = make_models("gpt2")
    train, evals = make_dataset("gpt2"), make_dataset("gpt2", n=6, seed=3)
    train_cache, (eval_cache,) = _caches(tmp_path, teacher, train, [evals])
    args = make_args(tmp_path, per_device_eval_batch_size=4)
    got, live = [], []
    cached = DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache=eval_cache, args=args,
                                 train_dataset=train, eval_dataset=evals, compute_metrics=_compute_metrics(got))
    m_cached = cached.evaluate()
    m_live = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=evals,
                                 compute_metrics=_compute_metrics(live)).evaluate()
    for key in ("eval_loss", "eval_loss_kd", "eval_loss_hidden", "eval_loss_task", "eval_student_perplexity",
                "eval_teacher_perplexity", "eval_mean_logit"):
        assert m_cached[key] == pytest.approx(m_live[key], rel=1e-5), key
    np.testing.assert_allclose(got[0].predictions, live[0].predictions, rtol=1e-6)  # the student's logits
    np.testing.assert_array_equal(got[0].label_ids, live[0].label_ids)
    assert cached.evaluate(eval_dataset=evals)["eval_loss"] == pytest.approx(m_cached["eval_loss"], rel=1e-6)
    on_train = cached.evaluate(eval_dataset=train)  # the training set reads the training cache
    live_train = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=train).evaluate()
    for key in ("eval_loss", "eval_loss_kd", "eval_loss_hidden"):
        assert on_train[key] == pytest.approx(live_train[key], rel=1e-5), key


def test_training_with_eval_steps_from_caches(tmp_path):
    teacher, student = make_models("llama")
    train, evals = make_dataset("llama"), make_dataset("llama", n=4, seed=5)
    train_cache, (eval_cache,) = _caches(tmp_path, teacher, train, [evals], k=6)
    args = make_args(tmp_path, max_steps=2, per_device_train_batch_size=4, eval_strategy="steps", eval_steps=1,
                     logit_chunk_size=5)
    trainer = DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache=eval_cache,
                                  args=args, train_dataset=train, eval_dataset=evals)
    trainer.train()
    evals_logged = [h for h in trainer.state.log_history if "eval_loss" in h]
    assert len(evals_logged) == 2 and all("eval_loss_kd" in h and "eval_loss_hidden" in h for h in evals_logged)
    assert "eval_teacher_perplexity" not in evals_logged[0]  # k = 6 < V: targets outside the top k


def test_without_an_eval_cache_eval_loss_is_the_students_task_loss(tmp_path, caplog):
    teacher, student = make_models("llama")
    train, evals = make_dataset("llama"), make_dataset("llama", n=6, seed=3)
    train_cache, _ = _caches(tmp_path, teacher, train, [], k=5, layers=())
    calls = []
    trainer = DistillationTrainer(model=student, teacher_cache=train_cache, train_dataset=train, eval_dataset=evals,
                                  args=make_args(tmp_path, alpha_hidden=0.0, alpha_task=0.0,
                                                 per_device_eval_batch_size=4),
                                  compute_metrics=_compute_metrics(calls))
    with caplog.at_level(logging.WARNING):
        metrics = trainer.evaluate()
    assert "eval_loss is the student's task loss" in caplog.text
    batch = full_batch(evals)
    with torch.no_grad():
        out = student.eval()(**batch)  # one batch of every row: the mean over all label tokens
    assert metrics["eval_loss"] == pytest.approx(out.loss.item(), rel=1e-5)
    assert metrics["eval_loss_task"] == metrics["eval_loss"]
    assert metrics["eval_student_perplexity"] == pytest.approx(out.loss.exp().item(), rel=1e-5)
    assert not {"eval_loss_kd", "eval_teacher_perplexity"} & set(metrics)
    assert metrics["eval_mean_logit"] == pytest.approx(out.logits.mean().item(), rel=1e-5)
    unlabeled = evals.remove_columns("labels")
    with pytest.raises(HfCompressError, match="the eval batches must have `labels`, got none; or pass "
                                              "eval_teacher_cache"):
        trainer.evaluate(eval_dataset=unlabeled)
    pred = trainer.predict(unlabeled)  # predictions need no loss
    assert pred.predictions.shape[:2] == (6, 12) and "test_loss" not in pred.metrics


def test_classifier_and_a_dict_of_eval_sets(tmp_path):
    teacher, student = make_models("bert-cls")
    train, a, b = make_dataset("bert-cls"), make_dataset("bert-cls", n=6, seed=3), make_dataset("bert-cls", seed=4)
    train_cache, (a_cache,) = _caches(tmp_path, teacher, train, [a], k=3)
    args = make_args(tmp_path, per_device_eval_batch_size=4)
    cached = DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache={"a": a_cache},
                                 args=args, train_dataset=train, eval_dataset={"a": a, "b": b})
    got = cached.evaluate()
    live_a = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=a).evaluate()
    for key in ("loss", "loss_kd", "loss_hidden", "loss_task", "accuracy", "teacher_accuracy", "teacher_agreement"):
        assert got[f"eval_a_{key}"] == pytest.approx(live_a[f"eval_{key}"], rel=1e-5, abs=1e-6), key
    batch = full_batch(b)
    with torch.no_grad():
        out = student.eval()(**batch)
    assert got["eval_b_loss"] == pytest.approx(out.loss.item(), rel=1e-5)  # no cache for "b": task loss only
    assert got["eval_b_accuracy"] == pytest.approx((out.logits.argmax(-1) == batch["labels"]).float().mean().item())
    assert "eval_b_teacher_agreement" not in got and "eval_b_loss_kd" not in got


def test_bad_eval_caches_are_refused_at_init(tmp_path):
    teacher, student = make_models("llama")
    train, evals = make_dataset("llama"), make_dataset("llama", n=6, seed=3)
    train_cache, (eval_cache,) = _caches(tmp_path, teacher, train, [evals], k=5, layers=())
    args = make_args(tmp_path, alpha_hidden=0.0)
    with pytest.raises(HfCompressError, match="`eval_teacher_cache` must be None with a live teacher_model"):
        DistillationTrainer(model=student, teacher_model=teacher, eval_teacher_cache=eval_cache, args=args)
    with pytest.raises(HfCompressError, match="eval-cache-0 was written for another dataset.*cache this evaluation set"):
        DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache=eval_cache, args=args,
                            train_dataset=train, eval_dataset=make_dataset("llama", n=6, seed=4))
    with pytest.raises(HfCompressError, match="`eval_dataset` must have the cache's 6 rows, got 8"):
        DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache=eval_cache, args=args,
                            train_dataset=train, eval_dataset=train)
    other = make_models("llama")[0]
    other.lm_head.weight.data += 1
    foreign = cache_teacher_outputs(other, evals, tmp_path / "foreign", top_k=5, progress=False)
    with pytest.raises(HfCompressError, match="`eval_teacher_cache` .* was written by another teacher than "
                                              "teacher_cache"):
        DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache=foreign, args=args,
                            train_dataset=train, eval_dataset=evals)
    with pytest.raises(HfCompressError, match=r"must be a dict of caches keyed by names of the eval_dataset dict "
                                              r"\['x'\], got \['y'\]"):
        DistillationTrainer(model=student, teacher_cache=train_cache, eval_teacher_cache={"y": eval_cache},
                            args=args, train_dataset=train, eval_dataset={"x": evals})
    args_h = make_args(tmp_path)  # alpha_hidden > 0: the eval cache must hold the paired hidden states too
    train_h, _ = _caches(tmp_path / "h", teacher, train, [], k=5)
    with pytest.raises(HfCompressError, match=r"`eval_teacher_cache` must hold the teacher hidden states"):
        DistillationTrainer(model=student, teacher_cache=train_h, eval_teacher_cache=eval_cache, args=args_h,
                            train_dataset=train, eval_dataset=evals)
