"""On-policy (lmbda) and sequence-level (seq_kd) distillation: sampled tokens, the loss on them, lmbda = 0."""

import pytest
import torch
import torch.nn.functional as F
from distill_fixtures import make_args, make_dataset, make_models

from hf_compress import DistillationTrainer, HfCompressError, cache_teacher_outputs
from hf_compress.distillation.generation import generate_completions


def _batch():
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 0, 0]])
    attn = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, -100, -100, 8, 9, 10], [-100, -100, 13, 14, -100, -100]])
    return {"input_ids": ids, "attention_mask": attn, "labels": labels}


def _manual(model, seed, new=5, temperature=0.7):
    prompts = torch.tensor([[5, 6, 7], [0, 11, 12]])  # prompts before the first label, left-padded by hand
    attn = torch.tensor([[1, 1, 1], [0, 1, 1]])
    torch.manual_seed(seed)
    with torch.no_grad():
        return model.generate(input_ids=prompts, attention_mask=attn, do_sample=True, temperature=temperature,
                              top_k=0, top_p=1.0, max_new_tokens=new, pad_token_id=0, eos_token_id=0)


def test_sampled_tokens_equal_a_manual_generate_with_the_same_seed():
    _, student = make_models("llama")
    out = generate_completions(student, _batch(), max_new_tokens=5, temperature=0.7, seed=123)
    expected = _manual(student, 123)
    valid = out["attention_mask"].bool()
    assert torch.equal(out["input_ids"][valid], expected[valid])
    assert out["labels"][:, :3].eq(-100).all() and torch.equal(out["labels"][:, 3:][valid[:, 3:]],
                                                                   expected[:, 3:][valid[:, 3:]])
    assert out["position_ids"][1].tolist()[:3] == [0, 0, 1]


def _trainer(tmp_path, teacher, student, **kw):
    args = make_args(tmp_path, alpha_hidden=0.0, alpha_task=0.0, max_new_tokens=5, generation_temperature=0.7,
                     seed=122, **kw)
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=make_dataset("llama"))


@pytest.mark.parametrize("who", ["student", "teacher"])
def test_loss_on_sampled_tokens_equals_a_naive_computation(tmp_path, who):
    teacher, student = make_models("llama")
    kw = {"lmbda": 1.0} if who == "student" else {"seq_kd": True}
    trainer = _trainer(tmp_path, teacher, student, **kw)
    (batch,), counts = trainer.get_batch_samples(iter([_batch()]), 1, "cpu")
    sampler = student if who == "student" else teacher
    expected = _manual(sampler, 123)  # seed + 1: the first sampled batch
    valid = batch["attention_mask"].bool()
    assert torch.equal(batch["input_ids"][valid], expected[valid])
    student.train()
    loss = trainer.compute_loss(student, batch, num_items_in_batch=counts)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        s, t = student(**inputs).logits[:, :-1].double(), teacher(**inputs).logits[:, :-1].double()
    mask = valid[:, 1:] & batch["labels"][:, 1:].ne(-100)
    kl = F.kl_div(F.log_softmax(s[mask] / 2, -1), F.log_softmax(t[mask] / 2, -1), log_target=True,
                  reduction="sum") * 4 / mask.sum()
    assert loss.item() == pytest.approx(kl.item(), rel=1e-4)  # fp32 log-softmax of a small KL


def test_lmbda_zero_is_todays_batch_untouched_and_nothing_sampled(tmp_path, monkeypatch):
    teacher, student = make_models("llama")
    trainer = _trainer(tmp_path, teacher, student)
    monkeypatch.setattr(type(student), "generate", lambda *a, **k: pytest.fail("sampled with lmbda = 0"))
    batch = _batch()
    (got,), counts = trainer.get_batch_samples(iter([batch]), 1, "cpu")
    assert got is batch and counts.logits.item() == 5
    trainer.train()


def test_on_policy_bad_settings_are_refused_before_training(tmp_path):
    teacher, student = make_models("llama")
    with pytest.raises(HfCompressError, match=r"`lmbda` must be a fraction in \[0, 1\].*got 1.5"):
        make_args(tmp_path, lmbda=1.5)
    with pytest.raises(HfCompressError, match="`max_new_tokens` must be a positive integer, got 0"):
        make_args(tmp_path, max_new_tokens=0)
    bert_t, bert_s = make_models("bert-mlm")
    with pytest.raises(HfCompressError, match="`lmbda` must be 0 with a masked-lm student"):
        DistillationTrainer(model=bert_s, teacher_model=bert_t, args=make_args(tmp_path, lmbda=0.5))
    ds = make_dataset("llama")
    folder = cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=4, progress=False)
    with pytest.raises(HfCompressError, match="`seq_kd` must be False with a teacher_cache"):
        DistillationTrainer(model=student, teacher_cache=folder, train_dataset=ds,
                            args=make_args(tmp_path, alpha_hidden=0.0, seq_kd=True))
