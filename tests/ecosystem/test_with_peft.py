"""PEFT (LoRA) students: trained by DistillationTrainer, saved as an adapter like the stock Trainer saves one,
reloaded with peft to the same logits; the teacher may be the student's own base with the adapters off
(runs where peft is installed: `make test-eco`)."""

from __future__ import annotations

import copy

import pytest
import torch
from distillation.test_trainer import full_batch, make_args, make_dataset, make_models
from transformers import AutoModelForCausalLM

from hf_compress import DistillationTrainer, HfCompressError

peft = pytest.importorskip("peft")


def _lora(model):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                             task_type="CAUSAL_LM")
    return peft.get_peft_model(model, config)


@pytest.mark.parametrize("teacher_kind", ["separate", "own base"])
def test_lora_student_trains_saves_an_adapter_and_reloads(tmp_path, teacher_kind):
    teacher, base = make_models("llama")
    base.save_pretrained(tmp_path / "base")
    student = _lora(base)
    with torch.no_grad():  # non-zero adapters, so a teacher pass that kept them on would differ
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    lora_before = {n: p.detach().clone() for n, p in student.named_parameters() if "lora_B" in n}
    frozen_before = {n: p.detach().clone() for n, p in student.named_parameters() if not p.requires_grad}
    if teacher_kind == "own base":
        teacher = student.get_base_model()  # the same weights, run with the adapters disabled
    ds = make_dataset("llama")
    args = make_args(tmp_path, max_steps=3, per_device_train_batch_size=4, alpha_hidden=0.5, alpha_task=0.3)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ds)
    if teacher_kind == "own base":  # its pass equals the plain base model's, adapters and dropout off
        batch = full_batch(ds)
        want = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()(**batch).logits
        torch.testing.assert_close(trainer.teacher_source(batch).logits, want)
    trainer.train()
    assert any(p.requires_grad for n, p in student.named_parameters() if "lora_" in n)  # adapters not frozen
    assert any(not torch.equal(p, lora_before[n]) for n, p in student.named_parameters() if n in lora_before)
    for name, p in student.named_parameters():
        if name in frozen_before:
            assert torch.equal(p, frozen_before[name]), name  # the base weights are never trained
    out = tmp_path / "saved"
    trainer.save_model(str(out))
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names and "model.safetensors" not in names
    reloaded = peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), str(out))
    batch = full_batch(ds)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.eval()(**batch).logits, student.eval()(**batch).logits)


def test_the_inner_model_of_a_peft_model_is_refused(tmp_path):
    teacher, base = make_models("llama")
    student = _lora(copy.deepcopy(base))
    with pytest.raises(HfCompressError, match="must be the PeftModel itself"):
        DistillationTrainer(model=student.base_model.model, teacher_model=teacher,
                            args=make_args(tmp_path), train_dataset=make_dataset("llama"))
