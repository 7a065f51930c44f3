"""Chunked logit losses (LM head included): the same loss and gradients as the dense path, fewer bytes."""

import copy

import pytest
import torch
from distill_fixtures import GradCapture, make_args, make_dataset, make_models
from tiny_models import tiny_model

from hf_compress import DistillationTrainer, HfCompressError, cache_teacher_outputs
from hf_compress.distillation import losses
from hf_compress.distillation.chunked import ChunkedHeadLoss, head_logits


def _grads(tmp_path, student, ds, chunk, bs=8, ga=1, **kw):
    source = kw.pop("source")
    args = make_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                     max_grad_norm=0.0, logit_chunk_size=chunk, **kw)
    trainer = DistillationTrainer(model=copy.deepcopy(student), args=args, train_dataset=ds, **source)
    cap = GradCapture(trainer)
    trainer.add_callback(cap)
    trainer.train()
    return cap.grads[0], trainer.state.log_history[0]


@pytest.mark.parametrize("loss", ["forward_kl", "reverse_kl", "jsd", "mse"])
def test_chunked_step_equals_the_dense_step(tmp_path, loss):
    teacher, student = make_models("llama")
    ds = make_dataset("llama")
    dense, log_d = _grads(tmp_path, student, ds, 0, logit_loss=loss, source={"teacher_model": teacher})
    for chunk, bs, ga in ((5, 8, 1), (7, 4, 2)):  # chunks cut across examples; accumulation still exact
        got, log_c = _grads(tmp_path, student, ds, chunk, bs, ga, logit_loss=loss, source={"teacher_model": teacher})
        for name, g in dense.items():
            torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)
        for key in ("loss", "loss_kd", "loss_hidden", "loss_task"):
            assert log_c[key] == pytest.approx(log_d[key], rel=1e-5), key


def test_chunked_from_a_cache_equals_the_dense_cached_step(tmp_path):
    teacher, student = make_models("gpt2")
    ds = make_dataset("gpt2")
    folder = cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=7, hidden_layers=[2, 4],
                                   hidden_dtype="float32", progress=False)
    dense, _ = _grads(tmp_path, student, ds, 0, source={"teacher_cache": folder})
    got, _ = _grads(tmp_path, student, ds, 3, source={"teacher_cache": folder})
    for name, g in dense.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_the_function_matches_autograd_on_full_logits_and_softcap():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(13, 8, generator=g, requires_grad=True)
    w = torch.randn(30, 8, generator=g, requires_grad=True)
    b = torch.randn(30, generator=g, requires_grad=True)
    t = torch.randn(13, 30, generator=g)
    coeffs = torch.tensor([0.7])

    def terms(logits, lo, hi):
        return losses.forward_kl(logits, t[lo:hi], temperature=2.0, reduction="sum")[None]

    loss, sums = ChunkedHeadLoss.apply(h, w, b, coeffs, 4, 5.0, terms)
    (loss * 3).backward()
    got = [x.grad.clone() for x in (h, w, b)]
    for x in (h, w, b):
        x.grad = None
    ref = 0.7 * losses.forward_kl(head_logits(h, w, b, 5.0), t, temperature=2.0, reduction="sum")
    (ref * 3).backward()
    assert float(sums[0]) * 0.7 == pytest.approx(ref.detach().item(), rel=1e-6)
    for a, x in zip(got, (h, w, b)):
        torch.testing.assert_close(a, x.grad, rtol=1e-5, atol=1e-6)


def test_chunking_is_refused_for_encoders(tmp_path):
    teacher, student = make_models("bert-mlm")
    with pytest.raises(HfCompressError, match="`logit_chunk_size` must be 0 for a masked-lm student"):
        DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, logit_chunk_size=4))
    with pytest.raises(HfCompressError, match="`logit_chunk_size` must be an integer >= 0"):
        make_args(tmp_path, logit_chunk_size=-1)


def test_gemma2_softcapped_head_chunked_equals_dense(tmp_path):
    teacher, student = tiny_model("gemma2", seed=1), tiny_model("gemma2", seed=2, num_hidden_layers=2)
    ds = make_dataset("llama")
    dense, _ = _grads(tmp_path, student, ds, 0, source={"teacher_model": teacher})
    got, _ = _grads(tmp_path, student, ds, 6, source={"teacher_model": teacher})
    for name, g in dense.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)


def test_head_gradient_added_in_place_into_an_existing_grad():
    g = torch.Generator().manual_seed(1)
    h = torch.randn(11, 8, generator=g, requires_grad=True)
    w = torch.randn(30, 8, generator=g, requires_grad=True)
    t = torch.randn(11, 30, generator=g)
    earlier = torch.randn(30, 8, generator=g)  # an earlier micro-batch's gradient

    def terms(logits, lo, hi):
        return losses.forward_kl(logits, t[lo:hi], reduction="sum")[None]

    grads = {}
    for into in (False, True):
        w.grad, h.grad = earlier.clone(), None
        buffer = w.grad
        loss, _ = ChunkedHeadLoss.apply(h, w, None, torch.tensor([0.5]), 4, None, terms, into)
        loss.backward()
        assert (w.grad is buffer) or not into  # in place: the same tensor, no (V, d) buffer of its own
        grads[into] = (h.grad.clone(), w.grad.clone())
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    w.grad = earlier.clone()
    loss, _ = ChunkedHeadLoss.apply(h, w, None, torch.tensor([0.5]), 4, None, terms, True)
    with pytest.raises(RuntimeError, match="needs an unscaled backward"):
        (loss * 2).backward()
    w.grad = None  # no grad yet: the buffer path, whatever into_grad says
    loss, _ = ChunkedHeadLoss.apply(h, w, None, torch.tensor([0.5]), 4, None, terms, True)
    loss.backward()
    torch.testing.assert_close(w.grad, grads[False][1] - earlier, rtol=1e-5, atol=1e-6)


def test_accumulation_window_uses_the_in_place_head_gradient(tmp_path, monkeypatch):
    from hf_compress.distillation import chunked

    seen = []
    real = chunked.ChunkedHeadLoss.forward

    def spy(ctx, hidden, weight, *rest):
        out = real(ctx, hidden, weight, *rest)
        seen.append(ctx.into_grad)
        return out

    monkeypatch.setattr(chunked.ChunkedHeadLoss, "forward", staticmethod(spy))
    teacher, student = make_models("llama")
    _grads(tmp_path, student, make_dataset("llama"), 5, 4, 2, source={"teacher_model": teacher})
    assert seen == [False, True]  # micro-batch 1: no .grad yet (buffer); micro-batch 2: added in place


@pytest.mark.parametrize("grad", [True, False])
def test_one_chunk_of_logit_buffers_at_a_time(grad, monkeypatch):
    """A chunk's logits and logit gradient are freed before the next chunk's logits are made (the peak holds one
    chunk's (n, V) buffers, not two)."""
    import types
    import weakref

    from hf_compress.distillation import chunked

    g = torch.Generator().manual_seed(3)
    h = torch.randn(10, 8, generator=g, requires_grad=grad)
    w = torch.randn(30, 8, generator=g, requires_grad=grad)
    alive = []

    def linear(x, *rest):
        assert all(r() is None for r in alive), "an earlier chunk's (n, V) buffer is alive when the next is made"
        return torch.nn.functional.linear(x, *rest)

    monkeypatch.setattr(chunked, "F", types.SimpleNamespace(linear=linear))

    def terms(logits, lo, hi, want_grad=True):
        dz = torch.softmax(logits, 1) if want_grad else None
        alive.extend(weakref.ref(x) for x in (logits, dz) if x is not None)
        return logits.logsumexp(1).sum()[None], dz

    terms.fused = True
    loss, _ = chunked.chunked_head_loss(h, w, None, torch.tensor([1.0]), 3, None, terms)
    if grad:
        loss.backward()
        torch.testing.assert_close(w.grad, torch.softmax(h @ w.t(), 1).t() @ h, rtol=1e-5, atol=1e-6)


def test_steps_after_zero_grad_set_to_none_equal_the_dense_steps(tmp_path, monkeypatch):
    """transformers' Trainer zeroes with set_to_none=True: every optimizer step starts with the head's .grad None
    (the buffer path), later micro-batches of a window add in place; three steps of updates stay equal to dense."""
    from hf_compress.distillation import chunked

    seen = []
    real = chunked.ChunkedHeadLoss.forward

    def spy(ctx, hidden, weight, *rest):
        seen.append(weight.grad is None)
        return real(ctx, hidden, weight, *rest)

    monkeypatch.setattr(chunked.ChunkedHeadLoss, "forward", staticmethod(spy))
    teacher, student = make_models("llama")
    ds = make_dataset("llama")
    runs = {}
    for chunk in (0, 5):
        args = make_args(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=3,
                         max_grad_norm=0.0, logit_chunk_size=chunk)
        trainer = DistillationTrainer(model=copy.deepcopy(student), args=args, train_dataset=ds, teacher_model=teacher)
        cap = GradCapture(trainer)
        trainer.add_callback(cap)
        trainer.train()
        runs[chunk] = cap.grads
    assert seen == [True, False] * 3  # each step: micro-batch 1 with .grad None, micro-batch 2 in place
    for step, (dense, got) in enumerate(zip(runs[0], runs[5])):
        for name, g in dense.items():
            torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=f"step {step}: {name}")
