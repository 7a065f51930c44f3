"""Each loss against a naive implementation written straight from its formula (float64, explicit loops)."""

import math

import pytest
import torch
from distill_fixtures import naive_divergence

from hf_compress.distillation import losses


def _softmax(z, tau):
    e = [math.exp(v / tau) for v in z]
    s = sum(e)
    return [v / s for v in e]


def naive(kind, s_row, t_row, tau=1.0, beta=0.5):
    s_row, t_row = s_row.tolist(), t_row.tolist()
    if kind == "mse":
        return sum((a - b) ** 2 for a, b in zip(s_row, t_row)) / len(s_row)
    return naive_divergence(kind, _softmax(s_row, tau), _softmax(t_row, tau), tau, beta)


def call(kind, s, t, mask=None, tau=1.0, beta=0.5, **kw):
    if kind == "forward_kl":
        return losses.forward_kl(s, t, mask, temperature=tau, **kw)
    if kind == "reverse_kl":
        return losses.reverse_kl(s, t, mask, temperature=tau, **kw)
    if kind == "jsd":
        return losses.generalized_jsd(s, t, mask, temperature=tau, beta=beta, **kw)
    return losses.logit_mse(s, t, mask, **kw)


KINDS = ["forward_kl", "reverse_kl", "jsd", "mse"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("tau,beta", [(1.0, 0.5), (2.5, 0.1), (0.7, 0.9)])
def test_logit_losses_match_naive_formula(kind, tau, beta):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 5, 11, generator=g) * 3
    t = torch.randn(2, 5, 11, generator=g) * 3
    mask = torch.rand(2, 5, generator=g) > 0.3
    per_pos = call(kind, s, t, mask, tau, beta, reduction="none")
    assert per_pos.shape == (2, 5)
    for b in range(2):
        for i in range(5):
            expected = naive(kind, s[b, i], t[b, i], tau, beta) if mask[b, i] else 0.0
            assert per_pos[b, i].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    total = sum(naive(kind, s[b, i], t[b, i], tau, beta) for b in range(2) for i in range(5) if mask[b, i])
    assert call(kind, s, t, mask, tau, beta, reduction="sum").item() == pytest.approx(total, rel=1e-5)
    assert call(kind, s, t, mask, tau, beta, reduction="mean").item() == pytest.approx(total / int(mask.sum()), rel=1e-5)
    assert call(kind, s, t, mask, tau, beta, reduction="mean", num_items=40).item() == pytest.approx(total / 40, rel=1e-5)


def test_jsd_half_is_symmetric_and_kls_are_not():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(4, 7, generator=g), torch.randn(4, 7, generator=g) * 2
    assert torch.allclose(losses.generalized_jsd(s, t), losses.generalized_jsd(t, s), rtol=1e-5)
    assert not torch.allclose(losses.forward_kl(s, t), losses.forward_kl(t, s), rtol=1e-3)
    assert torch.allclose(losses.forward_kl(s, t), losses.reverse_kl(t, s), rtol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_rows_and_all_inf_rows_give_no_nan(kind):
    s = torch.randn(3, 6, requires_grad=True)
    t = torch.randn(3, 6)
    t_inf = t.clone()
    t_inf[1] = float("-inf")  # a row whose logits are all -inf
    mask = torch.tensor([True, True, False])
    s2 = s.detach().clone()
    s2[2] = float("nan")  # garbage in a masked row must not leak
    for student, teacher in ((s, t_inf), (s2.requires_grad_(), t)):
        out = call(kind, student, teacher, mask, 2.0, reduction="sum")
        assert torch.isfinite(out)
        out.backward()
        assert torch.isfinite(student.grad).all()
    fully_masked = call(kind, s, t, torch.zeros(3, dtype=torch.bool), reduction="mean")
    assert fully_masked.item() == 0.0


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_shared_minus_inf_logits_equal_loss_over_remaining_vocab(kind):
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    s_inf, t_inf = s.clone(), t.clone()
    s_inf[:, 6:] = float("-inf")
    t_inf[:, 6:] = float("-inf")
    got = call(kind, s_inf.requires_grad_(), t_inf, tau=1.5, reduction="none")
    expected = torch.tensor([naive(kind, s[i, :6], t[i, :6], 1.5) for i in range(4)])
    assert torch.allclose(got.detach().double(), expected.double(), rtol=1e-5, atol=1e-7)
    got.sum().backward()
    assert torch.isfinite(s_inf.grad).all()


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_one_sided_minus_inf_is_finite(kind):
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    s[:, 0] = float("-inf")  # teacher supports a token the student forbids (and vice versa below)
    t[:, 1] = float("-inf")
    out = call(kind, s.requires_grad_(), t, reduction="sum")
    assert torch.isfinite(out)


def test_mse_leaves_out_non_finite_entries():
    s, t = torch.tensor([[1.0, 2.0, float("-inf")]]), torch.tensor([[0.0, 0.0, float("-inf")]])
    assert losses.logit_mse(s, t).item() == pytest.approx((1 + 4) / 2)


def test_half_precision_inputs_are_computed_in_fp32():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(3, 50, generator=g) * 4, torch.randn(3, 50, generator=g) * 4
    ref = losses.forward_kl(s, t, temperature=2.0)
    got = losses.forward_kl(s.bfloat16(), t.bfloat16(), temperature=2.0)
    assert got.dtype == torch.float32
    ref_bf = losses.forward_kl(s.bfloat16().float(), t.bfloat16().float(), temperature=2.0)
    assert torch.equal(got, ref_bf) and got.item() == pytest.approx(ref.item(), rel=0.05)


def test_hidden_losses_match_formulas():
    g = torch.Generator().manual_seed(4)
    s, t = torch.randn(2, 3, 8, generator=g), torch.randn(2, 3, 8, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    mse = losses.hidden_mse(s, t, mask, reduction="none")
    cos = losses.hidden_cosine(s, t, mask, reduction="none")
    for b in range(2):
        for i in range(3):
            a, c = s[b, i].tolist(), t[b, i].tolist()
            exp_mse = sum((x - y) ** 2 for x, y in zip(a, c)) / 8
            dot = sum(x * y for x, y in zip(a, c))
            exp_cos = 1 - dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in c))
            keep = bool(mask[b, i])
            assert mse[b, i].item() == pytest.approx(exp_mse if keep else 0.0, rel=1e-5)
            assert cos[b, i].item() == pytest.approx(exp_cos if keep else 0.0, rel=1e-5, abs=1e-6)
    zero = torch.zeros(1, 4)
    assert torch.isfinite(losses.hidden_cosine(zero, zero))


def test_token_cross_entropy_matches_torch():
    g = torch.Generator().manual_seed(5)
    z, y = torch.randn(2, 4, 10, generator=g), torch.randint(0, 10, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]).bool()
    ref = torch.nn.functional.cross_entropy(z[mask], y[mask], reduction="sum")
    assert losses.token_cross_entropy(z, y, mask).item() == pytest.approx(ref.item(), rel=1e-6)


def test_bad_arguments_are_refused():
    s = torch.randn(2, 3)
    with pytest.raises(ValueError, match="shapes differ"):
        losses.forward_kl(s, torch.randn(2, 4))
    with pytest.raises(ValueError, match="`temperature` must be > 0, got -1"):
        losses.forward_kl(s, s, temperature=-1)
    with pytest.raises(ValueError, match="`beta` must be strictly between 0 and 1, got 1.0"):
        losses.generalized_jsd(s, s, beta=1.0)
    with pytest.raises(ValueError, match="`reduction` must be one of"):
        losses.forward_kl(s, s, reduction="avg")
    with pytest.raises(ValueError, match="mask shape"):
        losses.forward_kl(s, s, mask=torch.ones(3, dtype=torch.bool))
