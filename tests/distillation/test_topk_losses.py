"""Top-k (k buckets + one tail bucket) losses against naive float64 references written from the formula."""

import math

import pytest
import torch
from distill_fixtures import naive_divergence

from hf_compress.distillation import losses

V = 50
FUNCS = {"forward_kl": losses.forward_kl, "reverse_kl": losses.reverse_kl, "jsd": losses.generalized_jsd}


def naive_topk(kind, s_row, t_row, k, tau, beta=0.5):
    """Exact probabilities from the full rows; buckets = teacher's top k + the rest; tempered as p_b^(1/tau)."""
    s_row, t_row = s_row.double().tolist(), t_row.double().tolist()
    top = sorted(range(V), key=lambda v: -t_row[v])[:k]
    rest = [v for v in range(V) if v not in top]

    def buckets(z):
        e = [math.exp(x) for x in z]
        total = sum(e)
        b = [e[v] / total for v in top] + ([sum(e[v] for v in rest) / total] if rest else [])
        w = [x ** (1 / tau) for x in b]
        return [x / sum(w) for x in w]

    return naive_divergence(kind, buckets(s_row), buckets(t_row), tau, beta)


def _cache_of(t, k):
    """What cache_teacher_outputs stores for teacher logits t: top-k ids/logits and the tail's log-sum-exp."""
    values, ids = t.topk(k, -1)
    return ids, values, t.scatter(-1, ids, float("-inf")).logsumexp(-1)


@pytest.mark.parametrize("kind", list(FUNCS))
@pytest.mark.parametrize("k", [1, 5, V])
@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_topk_loss_matches_the_naive_float64_formula(kind, k, tau):
    g = torch.Generator().manual_seed(k)
    s, t = torch.randn(6, V, generator=g) * 3, torch.randn(6, V, generator=g) * 3
    s_b, t_b = losses.topk_buckets(s, *_cache_of(t, k))
    got = FUNCS[kind](s_b, t_b, temperature=tau, reduction="none")
    expected = torch.tensor([naive_topk(kind, s[i], t[i], k, tau) for i in range(6)], dtype=torch.float32)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kind", list(FUNCS))
def test_k_equal_v_is_the_dense_loss_with_the_same_gradient(kind):
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(2, 7, V, generator=g) * 2).requires_grad_()
    t = torch.randn(2, 7, V, generator=g) * 2
    mask = torch.rand(2, 7, generator=g) > 0.3
    dense = FUNCS[kind](s, t, mask, temperature=2.0)
    (grad_dense,) = torch.autograd.grad(dense, s)
    ids, values, tail = _cache_of(t, V)
    assert bool(torch.isinf(tail).all())  # nothing outside the top V
    top = FUNCS[kind](*losses.topk_buckets(s, ids, values, tail), mask, temperature=2.0)
    (grad_top,) = torch.autograd.grad(top, s)
    torch.testing.assert_close(top, dense, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad_top, grad_dense, rtol=1e-5, atol=1e-7)


def test_gradient_matches_float64_autograd_of_the_naive_buckets():
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(4, V, generator=g) * 3).requires_grad_()
    t = torch.randn(4, V, generator=g) * 3
    ids, values, tail = _cache_of(t, 8)
    loss = losses.forward_kl(*losses.topk_buckets(s, ids, values, tail), temperature=1.0)
    (grad,) = torch.autograd.grad(loss, s)
    s64 = s.detach().double().requires_grad_()
    log_q = torch.log_softmax(s64, -1)
    q_b = torch.cat([log_q.gather(-1, ids), torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), -1, True)], -1)
    log_p = torch.log_softmax(t.double(), -1)
    p_b = torch.cat([log_p.gather(-1, ids), torch.logsumexp(log_p.scatter(-1, ids, float("-inf")), -1, True)], -1)
    ref = (p_b.exp() * (p_b - q_b)).sum()
    (grad64,) = torch.autograd.grad(ref, s64)
    torch.testing.assert_close(grad, grad64.float(), rtol=1e-4, atol=1e-6)


def test_a_student_row_with_nothing_finite_outside_the_top_k_stays_finite():
    s = torch.full((1, V), float("-inf"))
    s[0, :3] = torch.tensor([1.0, 2.0, 3.0])
    s.requires_grad_()
    t = torch.randn(1, V)
    ids = torch.tensor([[0, 1, 2]])
    loss = losses.forward_kl(*losses.topk_buckets(s, ids, t.gather(-1, ids), torch.tensor([0.5])))
    (grad,) = torch.autograd.grad(loss, s)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all())
