"""Fused KD + cross-entropy rows (hand-written gradients) against autograd through losses.py on the same logits."""

import functools

import pytest
import torch

from hf_compress.distillation import losses
from hf_compress.distillation.fused import FusedLogitLoss, fused_rows, fused_supported
from hf_compress.distillation.teacher import TeacherOutput

V = 40
FUNCS = {"forward_kl": losses.forward_kl, "reverse_kl": losses.reverse_kl, "jsd": losses.generalized_jsd}


def _case(seed, n=9, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    z, t = torch.randn(n, V, generator=g) * scale, torch.randn(n, V, generator=g) * scale
    kd_mask = torch.rand(n, generator=g) < 0.7
    ce_mask = torch.rand(n, generator=g) < 0.7
    targets = torch.randint(0, V, (n,), generator=g)
    return z, t, kd_mask, ce_mask, targets


def _reference(z, kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab=None):
    z = z.clone().requires_grad_()
    if rows[0] == "topk":
        kd = loss_fn(*losses.topk_buckets(z, *rows[1:]), mask=kd_mask, reduction="sum")
    else:
        kd = loss_fn(z[:, :vocab], rows[1][:, :vocab], mask=kd_mask, reduction="sum")
    ce = losses.token_cross_entropy(z, targets, mask=ce_mask, reduction="sum")
    (coeffs[0] * kd + coeffs[1] * ce).backward()
    return torch.stack([kd, ce]).detach(), z.grad


def _topk(t, k):
    values, ids = t.topk(k, -1)
    tail = t.scatter(-1, ids, float("-inf")).logsumexp(-1)
    return ("topk", ids.int(), values, tail)


def _check(z, kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab=None):
    sums, dz = fused_rows(z.clone(), kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab=vocab)
    ref_sums, ref_dz = _reference(z, kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab)
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dz, ref_dz, rtol=1e-5, atol=1e-6)
    no_grad, none = fused_rows(z.clone(), kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab=vocab,
                               want_grad=False)
    assert none is None
    torch.testing.assert_close(no_grad, ref_sums, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(FUNCS))
@pytest.mark.parametrize("k", [1, 6, V])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_topk_rows_equal_autograd(kind, k, tau):
    z, t, kd_mask, ce_mask, targets = _case(k)
    loss_fn = functools.partial(FUNCS[kind], temperature=tau)
    _check(z, kd_mask, ce_mask, targets, torch.tensor([0.7, 0.3]), loss_fn, _topk(t, k))


def test_topk_rows_whose_tail_underflows_are_exact():
    z, t, kd_mask, ce_mask, targets = _case(3)
    rows = _topk(t, 6)
    ids = rows[1].long()
    z[:3] = -200.0  # rows 0-2: the tail is 150 nats below the k ids (exp underflows against the maximum)
    z[:3].scatter_(1, ids[:3], torch.linspace(-50, -40, 6).expand(3, 6))
    z[0, 7] = -190.0
    kd_mask[:3], ce_mask[:3] = True, True
    loss_fn = functools.partial(losses.forward_kl, temperature=1.0)
    _check(z, kd_mask, ce_mask, targets, torch.tensor([1.0, 0.5]), loss_fn, rows)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "jsd-0.2"])
@pytest.mark.parametrize("tau", [1.0, 2.0])
@pytest.mark.parametrize("vocab", [None, 31])
def test_dense_rows_equal_autograd(kind, tau, vocab):
    z, t, kd_mask, ce_mask, targets = _case(5)
    extra = {"beta": float(kind.split("-")[1])} if "-" in kind else {}
    loss_fn = functools.partial(FUNCS[kind.split("-")[0]], temperature=tau, **extra)
    coeffs = torch.tensor([0.4, 1.3])
    _check(z, kd_mask, ce_mask, targets, coeffs, loss_fn, ("dense", t), vocab)
    # own=True (a chunk's temporaries, overwritten in place): the same sums and gradient
    sums, dz = fused_rows(z.clone(), kd_mask, ce_mask, targets, coeffs, loss_fn, ("dense", t.clone()), vocab=vocab,
                          own=True)
    ref_sums, ref_dz = _reference(z, kd_mask, ce_mask, targets, coeffs, loss_fn, ("dense", t), vocab)
    torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dz, ref_dz, rtol=1e-5, atol=1e-6)


def test_without_labels_and_with_zero_weights():
    z, t, kd_mask, ce_mask, targets = _case(7)
    loss_fn = functools.partial(losses.forward_kl, temperature=1.0)
    jsd = functools.partial(losses.generalized_jsd, temperature=2.0, beta=0.5)
    for rows, loss_fn in ((_topk(t, 5), loss_fn), (("dense", t), loss_fn), (("dense", t), jsd)):
        sums, dz = fused_rows(z.clone(), kd_mask, None, None, torch.tensor([0.5, 0.0]), loss_fn, rows)
        ref, ref_dz = _reference(z, kd_mask, torch.zeros_like(ce_mask), targets, torch.tensor([0.5, 0.0]),
                                 loss_fn, rows)
        torch.testing.assert_close(sums[0], ref[0], rtol=1e-5, atol=1e-5)
        assert float(sums[1]) == 0.0
        torch.testing.assert_close(dz, ref_dz, rtol=1e-5, atol=1e-6)


def test_the_autograd_function_scales_by_the_incoming_gradient():
    z, t, kd_mask, ce_mask, targets = _case(9)
    loss_fn = functools.partial(losses.reverse_kl, temperature=1.0)
    rows, coeffs = _topk(t, 4), torch.tensor([0.6, 0.2])
    leaf = z.clone().requires_grad_()
    fn = functools.partial(lambda x, want, **kw: fused_rows(x, **kw, want_grad=want), kd_mask=kd_mask,
                           ce_mask=ce_mask, targets=targets, coeffs=coeffs, loss_fn=loss_fn, teacher_rows=rows)
    loss, sums = FusedLogitLoss.apply(leaf, coeffs, fn)
    (loss * 2.5).backward()
    ref_sums, ref_dz = _reference(z, kd_mask, ce_mask, targets, coeffs, loss_fn, rows)
    torch.testing.assert_close(leaf.grad, ref_dz * 2.5, rtol=1e-5, atol=1e-6)
    assert float(loss.detach()) == pytest.approx(float((ref_sums * coeffs).sum()), rel=1e-6)


def test_supported_kinds():
    topk = TeacherOutput(topk_ids=torch.zeros(1, 1, 1))
    dense = TeacherOutput(logits=torch.zeros(1, 1, 2))
    assert fused_supported(functools.partial(losses.generalized_jsd, temperature=2.0, beta=0.5), topk)
    assert fused_supported(functools.partial(losses.forward_kl, temperature=2.0), dense)
    assert fused_supported(functools.partial(losses.reverse_kl, temperature=1.0), dense)
    assert not fused_supported(losses.logit_mse, dense)
    assert not fused_supported(losses.logit_mse, topk)


def _trainer_grads(tmp_path, student, ds, fused, bs=8, ga=1, **kw):
    import copy

    from distill_fixtures import GradCapture, make_args

    from hf_compress import DistillationTrainer

    source = kw.pop("source")
    args = make_args(tmp_path, per_device_train_batch_size=bs, gradient_accumulation_steps=ga, max_steps=1,
                     max_grad_norm=0.0, **kw)
    trainer = DistillationTrainer(model=copy.deepcopy(student), args=args, train_dataset=ds, **source)
    assert trainer._fusable  # the fused path is the default for these losses
    trainer._fusable = fused
    cap = GradCapture(trainer)
    trainer.add_callback(cap)
    trainer.train()
    return cap.grads[0], trainer.state.log_history[0]


@pytest.mark.parametrize("setup", ["live-forward_kl", "live-reverse_kl", "live-jsd-ga", "cache-jsd",
                                   "cache-forward_kl-ga"])
def test_fused_trainer_step_equals_the_autograd_step(tmp_path, setup):
    from distill_fixtures import make_dataset, make_models

    from hf_compress import cache_teacher_outputs

    teacher, student = make_models("llama")
    ds = make_dataset("llama")
    source, loss = {"teacher_model": teacher}, setup.split("-")[1]
    if setup.startswith("cache"):
        source = {"teacher_cache": cache_teacher_outputs(teacher, ds, tmp_path / "c", top_k=6, hidden_layers=[2, 4],
                                                         hidden_dtype="float32", progress=False)}
    bs, ga = (4, 2) if setup.endswith("ga") else (8, 1)
    ref, log_r = _trainer_grads(tmp_path, student, ds, False, bs, ga, logit_loss=loss, source=dict(source))
    got, log_f = _trainer_grads(tmp_path, student, ds, True, bs, ga, logit_loss=loss, source=dict(source))
    for name, g in ref.items():
        torch.testing.assert_close(got[name], g, rtol=1e-5, atol=1e-6, msg=name)
    for key in ("loss", "loss_kd", "loss_hidden", "loss_task"):
        assert log_f[key] == pytest.approx(log_r[key], rel=1e-5), key


def test_dense_blocks_cut_at_the_shared_vocabulary(monkeypatch):
    """Column blocks smaller than the row: several blocks, one ending at ``vocab`` (KD and CE-only columns)."""
    from hf_compress.distillation import fused_dense

    assert fused_dense._blocks(3000, 4096, stop=1500) == [(0, 1024), (1024, 1500), (1500, 2048), (2048, 3000)]
    monkeypatch.setattr(fused_dense, "_BLOCK", (63, 7))  # 9 rows: 7 columns per block
    z, t, kd_mask, ce_mask, targets = _case(11)
    for kind in ("reverse_kl", "jsd"):
        loss_fn = functools.partial(FUNCS[kind], temperature=2.0)
        _check(z, kd_mask, ce_mask, targets, torch.tensor([0.7, 0.9]), loss_fn, ("dense", t), 31)
        _check(z, kd_mask, ce_mask, targets, torch.tensor([0.7, 0.9]), loss_fn, ("dense", t))
        coeffs = torch.tensor([0.7, 0.9])
        sums, dz = fused_rows(z.clone(), kd_mask, ce_mask, targets, coeffs, loss_fn, ("dense", t), vocab=31, own=True)
        ref_sums, ref_dz = _reference(z, kd_mask, ce_mask, targets, coeffs, loss_fn, ("dense", t), 31)
        torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dz, ref_dz, rtol=1e-5, atol=1e-6)
