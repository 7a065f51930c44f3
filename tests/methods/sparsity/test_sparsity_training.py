"""Pruned weights stay exactly zero through training, with no change to the trainer code."""

from __future__ import annotations

import copy

import torch
from datasets import Dataset
from tiny_models import tiny_batch, tiny_model
from transformers import Trainer, TrainingArguments

from hf_compress import DistillationArguments, DistillationTrainer, sparsify
from hf_compress.methods.sparsity.sparsify import find_targets
from hf_compress.methods.sparsity.masks import make_permanent, masked_modules


def _weights(model) -> dict[str, torch.Tensor]:
    return {n: m.weight.detach().clone() for b in find_targets(model, []) for n, m in b.items()}


def _dataset(n: int = 16, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 100, (n, 12), generator=g)
    return Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(),
                              "labels": ids.tolist()})


def _args(cls, tmp_path, **extra):
    return cls(output_dir=str(tmp_path / "run"), max_steps=4, per_device_train_batch_size=4,
               learning_rate=1e-2, weight_decay=0.1, max_grad_norm=1.0, report_to="none", save_strategy="no",
               disable_tqdm=True, use_cpu=True, seed=0, **extra)


def _assert_same_zeros_and_trained(before: dict, after: dict) -> None:
    for name, w0 in before.items():
        pruned = w0 == 0
        assert pruned.float().mean() >= 0.5, name
        assert torch.equal(after[name] == 0, pruned), name  # the same entries, and only they, are zero
        assert (after[name][~pruned] != w0[~pruned]).float().mean() > 0.9, name  # training did move the rest


def test_zeros_survive_plain_trainer(tmp_path):
    model = sparsify(tiny_model("llama"), method="magnitude", pattern="2:4").train()
    before = _weights(model)
    Trainer(model=model, args=_args(TrainingArguments, tmp_path), train_dataset=_dataset()).train()
    _assert_same_zeros_and_trained(before, _weights(model))


def test_zeros_survive_distillation_trainer(tmp_path):
    teacher = tiny_model("llama", seed=1)
    student = tiny_model("llama", seed=2, num_hidden_layers=2)
    sparsify(student, sparsity=0.5, method="wanda", calibration=[tiny_batch()])
    before = _weights(student)
    args = _args(DistillationArguments, tmp_path, alpha_logits=1.0, alpha_hidden=0.5, alpha_task=0.5)
    DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=_dataset()).train()
    _assert_same_zeros_and_trained(before, _weights(student))


def _adamw_steps(model, optimizer, steps: int) -> None:
    batch = tiny_batch(4, 12, seed=5, padded=False)
    for _ in range(steps):
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def test_adamw_moments_of_pruned_entries_stay_zero(gpt2_lm):
    """Gradient masking alone keeps AdamW (with weight decay) from moving a zero: m = v = 0 there."""
    sparsify(gpt2_lm.train(), sparsity=0.5)
    optimizer = torch.optim.AdamW(gpt2_lm.parameters(), lr=1e-2, weight_decay=0.1)
    batch = tiny_batch(4, 12, seed=5, padded=False)
    gpt2_lm(**batch, labels=batch["input_ids"]).loss.backward()
    for name, module in masked_modules(gpt2_lm).items():
        pruned = module.sparsity_mask.logical_not()
        assert (module.weight.grad[pruned] == 0).all() and (module.weight.grad[~pruned] != 0).any(), name
    optimizer.step()
    _adamw_steps(gpt2_lm, optimizer, 2)
    for name, module in masked_modules(gpt2_lm).items():
        state, pruned = optimizer.state[module.weight], module.sparsity_mask.logical_not()
        assert (state["exp_avg"][pruned] == 0).all() and (state["exp_avg_sq"][pruned] == 0).all(), name


def test_stale_optimizer_state_is_overridden(llama_lm):
    """Momentum from dense steps before pruning would move zeros; the post-step re-application stops it."""
    llama_lm.train()
    optimizer = torch.optim.AdamW(llama_lm.parameters(), lr=1e-2, weight_decay=0.1)
    _adamw_steps(llama_lm, optimizer, 2)
    sparsify(llama_lm, sparsity=0.5)
    before = _weights(llama_lm)
    _adamw_steps(llama_lm, optimizer, 2)
    after = _weights(llama_lm)
    for name, module in masked_modules(llama_lm).items():
        pruned = module.sparsity_mask.logical_not()
        assert (optimizer.state[module.weight]["exp_avg"][pruned] != 0).any(), name  # the danger is real
        assert torch.equal(after[name] == 0, before[name] == 0), name


def test_deepcopy_keeps_protection_and_make_permanent_removes_it(llama_lm):
    sparsify(llama_lm, sparsity=0.5)
    clone = copy.deepcopy(llama_lm).train()  # deepcopy drops tensor hooks; the forward hook re-attaches them
    before = _weights(clone)
    _adamw_steps(clone, torch.optim.SGD(clone.parameters(), lr=0.1, momentum=0.9), 3)
    assert all(torch.equal(w == 0, before[n] == 0) for n, w in _weights(clone).items())

    assert make_permanent(clone) == len(before) and not masked_modules(clone)
    assert not any("mask" in k for k in dict(clone.named_buffers()))
    _adamw_steps(clone, torch.optim.AdamW(clone.parameters(), lr=1e-2), 2)
    moved = [n for n, w in _weights(clone).items() if (w[before[n] == 0] != 0).any()]
    assert len(moved) == len(before)  # unprotected now: the zeros do move


def test_in_place_edits_are_masked_before_forward_and_state_dict(llama_lm):
    sparsify(llama_lm, sparsity=0.5)
    batch = tiny_batch()
    expected = llama_lm(**batch).logits
    module = next(iter(masked_modules(llama_lm).values()))
    pruned = module.sparsity_mask.logical_not()
    with torch.no_grad():
        module.weight.masked_fill_(pruned, 3.0)  # an in-place edit outside any optimizer
    assert torch.equal(llama_lm(**batch).logits, expected)
    assert (module.weight[pruned] == 0).all()
    with torch.no_grad():
        module.weight.data.add_(1.0)  # .data edits bypass the version counter ...
    state = llama_lm.state_dict()  # ... but state_dict (so save_pretrained) re-applies the mask
    name = next(iter(masked_modules(llama_lm)))
    assert (state[name + ".weight"][pruned] == 0).all()
