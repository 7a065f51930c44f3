"""DistillationTrainer.evaluate()/predict() keep the whole Trainer contract: compute_metrics (here an `evaluate`
module loaded offline from a local file), preprocess_logits_for_metrics, speed metrics, callbacks and
metric_for_best_model, with the distillation terms and perplexity added."""

from pathlib import Path

import numpy as np
import pytest
import torch
from distillation.test_trainer import full_batch, make_args, make_dataset, make_models
from transformers import TrainerCallback

from hf_compress import DistillationTrainer

METRIC = str(Path(__file__).parent / "local_metric" / "local_accuracy.py")


def _accuracy_metric():
    evaluate = pytest.importorskip("evaluate")
    metric = evaluate.load(METRIC)  # a local module: nothing is downloaded

    def compute_metrics(pred):
        calls.append(pred)
        return {"user_accuracy": metric.compute(predictions=pred.predictions.argmax(-1),
                                                references=pred.label_ids)["accuracy"]}

    calls = []
    return compute_metrics, calls


def test_compute_metrics_sees_student_logits_and_labels(tmp_path):
    teacher, student = make_models("bert-cls")
    ds = make_dataset("bert-cls")
    compute_metrics, calls = _accuracy_metric()
    args = make_args(tmp_path, per_device_eval_batch_size=3, alpha_hidden=0.5)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=ds,
                                  compute_metrics=compute_metrics)
    metrics = trainer.evaluate()
    batch = full_batch(ds)
    with torch.no_grad():
        logits = student.eval()(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0].predictions, logits.numpy(), rtol=1e-5, atol=1e-6)  # logits only
    np.testing.assert_array_equal(calls[0].label_ids, batch["labels"].numpy())
    acc = (logits.argmax(-1) == batch["labels"]).float().mean().item()
    assert metrics["eval_user_accuracy"] == pytest.approx(acc)
    assert metrics["eval_accuracy"] == pytest.approx(acc)  # ours, from the same logits
    for key in ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second", "eval_loss_kd",
                "eval_loss_hidden", "eval_teacher_agreement"):
        assert key in metrics, key
    # eval_loss is the exact window-normalised mix, not the stock mean of the three batch losses
    plain = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=ds)
    assert plain.evaluate()["eval_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-6)
    assert trainer.state.log_history[-1]["eval_user_accuracy"] == metrics["eval_user_accuracy"]  # logged


def test_preprocess_logits_and_predict_for_causal_lm(tmp_path):
    teacher, student = make_models("gpt2")
    ds = make_dataset("gpt2")
    seen = []

    def preprocess(logits, labels):
        seen.append(logits.shape)
        return logits.argmax(-1)

    def compute_metrics(pred):
        preds, labels = pred.predictions[:, :-1], pred.label_ids[:, 1:]
        mask = labels != -100
        return {"next_token_accuracy": float((preds[mask] == labels[mask]).mean())}

    args = make_args(tmp_path, per_device_eval_batch_size=4)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=ds,
                                  compute_metrics=compute_metrics, preprocess_logits_for_metrics=preprocess)
    metrics = trainer.evaluate()
    assert seen and all(len(s) == 3 for s in seen)  # (B, T, V) logits, not the hidden states we asked for
    batch = full_batch(ds)
    with torch.no_grad():
        out = student.eval()(**batch)
    preds, labels = out.logits.argmax(-1)[:, :-1], batch["labels"][:, 1:]
    mask = labels != -100
    assert metrics["eval_next_token_accuracy"] == pytest.approx((preds[mask] == labels[mask]).float().mean().item())
    assert metrics["eval_student_perplexity"] == pytest.approx(torch.exp(out.loss).item(), rel=1e-5)
    result = trainer.predict(ds)
    assert result.predictions.shape == tuple(batch["input_ids"].shape)
    assert result.metrics["test_next_token_accuracy"] == metrics["eval_next_token_accuracy"]
    assert "test_loss_kd" in result.metrics and "test_runtime" in result.metrics


def test_user_metric_reaches_callbacks_and_best_model_selection(tmp_path):
    teacher, student = make_models("bert-cls")
    ds = make_dataset("bert-cls")
    compute_metrics, _ = _accuracy_metric()
    seen = []

    class Record(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kw):
            seen.append(dict(metrics))

    args = make_args(tmp_path, max_steps=2, eval_strategy="steps", eval_steps=1, save_strategy="steps",
                     save_steps=1, metric_for_best_model="user_accuracy", load_best_model_at_end=True,
                     per_device_train_batch_size=4)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds,
                                  eval_dataset=ds, compute_metrics=compute_metrics, callbacks=[Record()])
    trainer.train()
    assert len(seen) == 2 and all("eval_user_accuracy" in m and "eval_loss_kd" in m for m in seen)
    assert trainer.state.best_metric == max(m["eval_user_accuracy"] for m in seen)
