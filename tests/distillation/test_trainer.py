"""DistillationTrainer on tiny bert (MLM, classification), gpt2 and llama teacher/student pairs."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from distill_fixtures import KINDS, GradCapture, full_batch, make_args, make_dataset, make_models
from safetensors.torch import load_file
from tiny_models import tiny_model

from hf_compress import DistillationTrainer, HfCompressError
from hf_compress.distillation.layer_map import PROJECTIONS_FILE


def _one_step_per_split(tmp_path, student, teacher, ds, configs, **kw) -> tuple[list, list]:
    """One optimizer step from the same student for each (batch size, accumulation) in ``configs``: the
    gradients at the step and the logged loss of each."""
    grads, losses = [], []
    for bs, ga in configs:
        args = make_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                         max_grad_norm=0.0, **kw)
        trainer = DistillationTrainer(model=copy.deepcopy(student), teacher_model=teacher, args=args,
                                      train_dataset=ds)
        cap = GradCapture(trainer)
        trainer.add_callback(cap)
        trainer.train()
        grads.append(cap.grads[0])
        losses.append(trainer.state.log_history[0]["loss"])
    return grads, losses


@pytest.mark.parametrize("kind", list(KINDS))
def test_batch_8_equals_batch_4_times_accumulation_2(tmp_path, kind):
    teacher, student = make_models(kind)
    ds = make_dataset(kind)
    configs = ((8, 1), (4, 2), (2, 4)) if kind == "llama" else ((8, 1), (4, 2))
    grads, losses = _one_step_per_split(tmp_path, student, teacher, ds, configs,
                                        logit_loss="forward_kl" if kind != "llama" else "jsd",
                                        hidden_loss="mse+cosine", alpha_task=0.0 if kind == "bert-cls" else 0.3)
    # the micro-batches really hold different numbers of valid tokens, so a mean of means would differ
    labels = torch.tensor(ds["labels"])
    if kind != "bert-cls":
        per_half = [(labels[:4] != -100).sum().item(), (labels[4:] != -100).sum().item()]
        assert per_half[0] != per_half[1]
    assert any(n.startswith("proj.") for n in grads[0])  # widths differ: projections are trained too
    for other in grads[1:]:
        assert other.keys() == grads[0].keys()
        for name, g in grads[0].items():
            torch.testing.assert_close(other[name], g, rtol=1e-5, atol=1e-6, msg=name)
    assert losses[1:] == pytest.approx([losses[0]] * (len(losses) - 1), rel=1e-5)


def test_unlabelled_classifier_rows_are_distilled_and_exact_under_accumulation(tmp_path):
    """Rows labelled -100 (unlabelled text for a classifier) get KD only; the first micro-batch of the
    accumulated run has no label at all, which made the model's mean cross-entropy NaN before."""
    teacher, student = make_models("bert-cls")
    ds = make_dataset("bert-cls")
    labels = [-100, -100, -100, -100, 0, -100, 2, 1]
    ds = ds.remove_columns("labels").add_column("labels", labels)
    grads, losses = _one_step_per_split(tmp_path, student, teacher, ds, ((8, 1), (4, 2)), alpha_hidden=0.0,
                                        alpha_task=0.5)
    batch = full_batch(ds)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    kd, n = _naive_kd(s_logits, t_logits, torch.ones(8, dtype=torch.bool), 2.0)
    task = F.cross_entropy(s_logits[4:][[0, 2, 3]].double(), torch.tensor([0, 2, 1])).item()
    assert losses[0] == pytest.approx(kd / n + 0.5 * task, rel=1e-4)  # KD over 8 rows, CE over the 3 labelled
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-5, atol=1e-6, msg=name)


def _naive_kd(s_logits, t_logits, mask, tau):
    """KL(p_T || p_S) tau^2 summed over positions picked by a boolean mask, with F.kl_div."""
    log_s = F.log_softmax(s_logits[mask].double() / tau, -1)
    log_t = F.log_softmax(t_logits[mask].double() / tau, -1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="sum").item() * tau**2, int(mask.sum())


@pytest.mark.parametrize("kind", ["gpt2", "bert-mlm", "bert-cls"])
def test_evaluate_matches_independent_computation(tmp_path, kind):
    teacher, student = make_models(kind)
    if kind == "bert-cls":  # near-uniform random heads make a KL of ~1e-5, all fp32 cancellation: sharpen one
        teacher.classifier.weight.data *= 30
    ds = make_dataset(kind)
    args = make_args(tmp_path, per_device_eval_batch_size=3, alpha_hidden=0.0)  # 3 uneven eval batches
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=ds)
    metrics = trainer.evaluate()
    batch = full_batch(ds)
    with torch.no_grad():
        s_out, t_out = student.eval()(**batch), teacher(**batch)
    labels, attn = batch["labels"], batch["attention_mask"].bool()
    if kind == "gpt2":  # position i predicts token i+1
        mask = attn[:, 1:] & (labels[:, 1:] != -100)
        kd, n = _naive_kd(s_out.logits[:, :-1], t_out.logits[:, :-1], mask, 2.0)
        assert metrics["eval_student_perplexity"] == pytest.approx(torch.exp(s_out.loss).item(), rel=1e-5)
        assert metrics["eval_teacher_perplexity"] == pytest.approx(torch.exp(t_out.loss).item(), rel=1e-5)
    elif kind == "bert-mlm":
        kd, n = _naive_kd(s_out.logits, t_out.logits, attn & (labels != -100), 2.0)
    else:
        kd, n = _naive_kd(s_out.logits, t_out.logits, torch.ones(8, dtype=torch.bool), 2.0)
        acc = (s_out.logits.argmax(-1) == labels).float().mean().item()
        assert metrics["eval_accuracy"] == pytest.approx(acc)
        assert metrics["eval_teacher_accuracy"] == pytest.approx((t_out.logits.argmax(-1) == labels).float().mean().item())
    assert metrics["eval_loss_kd"] == pytest.approx(kd / n, rel=1e-4)  # fp32 logits of batch 3 vs 8
    if kind == "gpt2":  # a dict of eval sets is evaluated one by one, with prefixed keys
        named = trainer.evaluate({"wiki": ds})
        assert named["eval_wiki_loss_kd"] == pytest.approx(metrics["eval_loss_kd"], rel=1e-6)
    assert metrics["eval_loss_task"] == pytest.approx(s_out.loss.item(), rel=1e-5)  # the model's own loss
    assert metrics["eval_loss"] == pytest.approx(kd / n + 0.3 * s_out.loss.item(), rel=1e-5)


def test_hidden_term_matches_masked_formula_and_bf16_teacher_follows_student(tmp_path):
    teacher, student = make_models("llama")
    ds = make_dataset("llama")
    args = make_args(tmp_path, per_device_eval_batch_size=3, alpha_logits=0.0, alpha_task=0.0,
                     hidden_loss="cosine", include_embeddings=True)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, eval_dataset=ds)
    assert trainer.layer_pairs == [(0, 0), (1, 2), (2, 4)]
    metrics = trainer.evaluate()
    batch = full_batch(ds)
    attn = batch["attention_mask"].bool()
    with torch.no_grad():
        hs = student.eval()(**batch, output_hidden_states=True).hidden_states
        ht = teacher(**batch, output_hidden_states=True).hidden_states
        per_pair = [(1 - F.cosine_similarity(trainer.projections(hs[s], (s, t))[attn], ht[t][attn], dim=-1)).mean()
                    for s, t in trainer.layer_pairs]
    assert metrics["eval_loss_hidden"] == pytest.approx(torch.stack(per_pair).mean().item(), rel=1e-5)
    bf16 = DistillationTrainer(model=copy.deepcopy(student).to(torch.bfloat16), teacher_model=teacher,
                               args=make_args(tmp_path), train_dataset=ds)
    assert bf16.teacher.dtype == torch.bfloat16 and bf16.projections.proj["1_2"].weight.dtype == torch.bfloat16
    assert torch.isfinite(bf16.compute_loss(bf16.model, batch))


def test_logged_terms_add_up_to_the_loss(tmp_path):
    teacher, student = make_models("llama")
    trainer = DistillationTrainer(model=student, teacher_model=teacher, train_dataset=make_dataset("llama", 16),
                                  args=make_args(tmp_path, per_device_train_batch_size=4, max_steps=4,
                                                 gradient_accumulation_steps=2, logging_steps=2))
    trainer.train()
    logs = [row for row in trainer.state.log_history if "loss" in row]
    assert len(logs) == 2
    for row in logs:
        assert row["loss"] == pytest.approx(row["loss_kd"] + 0.5 * row["loss_hidden"] + 0.3 * row["loss_task"],
                                            rel=1e-5)


def test_teacher_is_frozen_in_eval_mode_and_student_mode_untouched(tmp_path):
    teacher, student = make_models("bert-mlm", dropout=True)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()
    trainer = DistillationTrainer(model=student, teacher_model=teacher, train_dataset=make_dataset("bert-mlm"),
                                  args=make_args(tmp_path, per_device_train_batch_size=4, max_steps=2))
    assert trainer.teacher is teacher and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).dtype == next(student.parameters()).dtype
    trainer.train()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    batch = full_batch(make_dataset("bert-mlm"))
    student.eval()
    teacher.train()  # someone flips it: the trainer turns dropout off again and leaves the student alone
    first = trainer.compute_loss(student, batch).item()
    assert not teacher.training and not student.training
    assert trainer.compute_loss(student, batch).item() == first
    student.train()
    trainer.compute_loss(student, batch)
    assert student.training


def test_incompatible_teachers_are_refused(tmp_path):
    args = make_args(tmp_path)
    _, student = make_models("gpt2")
    with pytest.raises(HfCompressError, match="teacher vocab_size 120 differs from the student's 100"):
        DistillationTrainer(model=student, teacher_model=tiny_model("gpt2", vocab_size=120), args=args)
    _, cls_student = make_models("bert-cls")
    cls_teacher = tiny_model("bert", "sequence-classification", num_labels=5)
    with pytest.raises(HfCompressError, match="teacher num_labels 5 differs from the student's 3"):
        DistillationTrainer(model=cls_student, teacher_model=cls_teacher, args=args)
    base = tiny_model("bert", "base")
    with pytest.raises(HfCompressError, match="has no logits to distil; set alpha_logits=0"):
        DistillationTrainer(model=base, teacher_model=tiny_model("bert", "base", seed=3), args=args)
    with pytest.raises(HfCompressError, match="is the student itself"):
        DistillationTrainer(model=student, teacher_model=student, args=args)
    with pytest.raises(HfCompressError, match="must be a DistillationArguments"):
        DistillationTrainer(model=student, teacher_model=student)


def test_teacher_from_path_uses_the_students_family_and_safetensors_only(tmp_path):
    teacher, student = make_models("gpt2")
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = DistillationTrainer(model=student, teacher_model=str(tmp_path / "teacher"), args=make_args(tmp_path))
    assert type(trainer.teacher) is type(teacher)
    for (n, a), b in zip(teacher.state_dict().items(), trainer.teacher.state_dict().values()):
        assert torch.equal(a, b), n
    (tmp_path / "bin").mkdir()
    teacher.config.save_pretrained(tmp_path / "bin")
    torch.save(teacher.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    with pytest.raises(HfCompressError, match="safetensors only"):
        DistillationTrainer(model=student, teacher_model=str(tmp_path / "bin"), args=make_args(tmp_path))


_RELOAD = r"""
import json, sys, torch, transformers
cases = json.loads(sys.argv[1])
out = {}
for folder, auto, ids in cases:
    model = getattr(transformers, auto).from_pretrained(folder, use_safetensors=True).eval()
    with torch.no_grad():
        out[folder] = model(input_ids=torch.tensor(ids)).logits.tolist()
assert not any(name.startswith("hf_compress") for name in sys.modules), "hf_compress was imported"
print(json.dumps(out))
"""


def test_saved_folders_load_in_stock_transformers_without_projections(tmp_path):
    autos = {"bert-mlm": "AutoModelForMaskedLM", "bert-cls": "AutoModelForSequenceClassification",
             "gpt2": "AutoModelForCausalLM", "llama": "AutoModelForCausalLM"}
    ids = full_batch(make_dataset("gpt2"))["input_ids"][:2]
    cases, expected = [], {}
    for i, kind in enumerate(autos):
        teacher, student = make_models(kind)
        args = make_args(tmp_path / kind, per_device_train_batch_size=4, max_steps=2, save_projections=(i == 0))
        trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                      train_dataset=make_dataset(kind))
        trainer.train()
        folder = str(tmp_path / f"saved-{kind}")
        trainer.save_model(folder)
        keys = load_file(os.path.join(folder, "model.safetensors")).keys()
        assert keys and set(keys) <= set(student.state_dict())  # so no projection weights in there
        assert os.path.exists(os.path.join(folder, PROJECTIONS_FILE)) == (i == 0)
        assert not [f for f in os.listdir(tmp_path) if f.startswith(".hf_compress-save-")]  # temp folder gone
        with torch.no_grad():
            expected[folder] = student.eval()(input_ids=ids).logits
        cases.append((folder, autos[kind], ids.tolist()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", _RELOAD, json.dumps(cases)], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder, logits in expected.items():
        torch.testing.assert_close(torch.tensor(got[folder]), logits, rtol=1e-5, atol=1e-5)


def test_resume_from_checkpoint_continues_identically(tmp_path):
    teacher, student = make_models("llama")
    ds = make_dataset("llama", 16)

    def trainer_for(out, model):
        args = make_args(tmp_path, output_dir=str(tmp_path / out), per_device_train_batch_size=4, max_steps=4,
                         save_strategy="steps", save_steps=2)
        return DistillationTrainer(model=model, teacher_model=teacher, args=args, train_dataset=ds)

    straight = trainer_for("a", copy.deepcopy(student))
    straight.train()
    checkpoint = tmp_path / "a" / "checkpoint-2"
    assert (checkpoint / PROJECTIONS_FILE).exists() and (checkpoint / "optimizer.pt").exists()
    resumed = trainer_for("b", copy.deepcopy(student))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    for a, b in zip(straight.projections.parameters(), resumed.projections.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)
    assert [r["loss"] for r in resumed.state.log_history if "loss" in r][-2:] == pytest.approx(
        [r["loss"] for r in straight.state.log_history if "loss" in r][-2:], rel=1e-6)
    (checkpoint / PROJECTIONS_FILE).unlink()
    with pytest.raises(HfCompressError, match="no distillation_projections.safetensors"):
        trainer_for("c", copy.deepcopy(student)).train(resume_from_checkpoint=str(checkpoint))
