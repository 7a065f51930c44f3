"""Causal-LM logit losses (KD + task cross-entropy) with hand-written gradients: one softmax pass per row block.

The autograd path (:mod:`.losses` on full logits) runs several (rows, V) passes per term: a log-softmax for the
student, one for the teacher, the top-k tail's scatter / shift / exp, the model's own cross-entropy log-softmax,
and the backward of each. Here one block of fp32 student logits ``z`` (n, V) gives the sums of both terms and
their gradient ``dz`` in one go:

- top-k targets (a teacher cache): ``e = exp(z - max)`` is the one (n, V) buffer; the k cached ids are gathered
  and zeroed in it, so its row sum is the student's tail mass (no cancellation) and ``tail + top`` the full
  normaliser, which the cross-entropy reuses. The k + 1 bucket loss (any of forward / reverse KL, JSD) is
  differentiated by autograd on the small (n, k + 1) bucket tensor; the chain back to V is ``e`` scaled per row
  plus a scatter at the k ids and at the target. Rows whose tail underflows against the row maximum (tail
  logits > 69 nats below it) get their tail log-sum-exp and softmax recomputed exactly.
- dense targets (a live teacher; forward / reverse KL, JSD): :mod:`.fused_dense`, in column blocks, the
  gradient written into ``z`` when the caller owns it (a chunk: 2 (n, V) buffers, the logits of both sides).

:func:`fused_rows` returns the unweighted sums and the weighted gradient of one block; :class:`FusedLogitLoss`
wraps full (B*T, V) logits (gradient computed in the forward pass, only scaled in backward); :mod:`.chunked`
calls :func:`fused_rows` on each chunk of LM-head rows.
"""

from __future__ import annotations

import functools

import torch

from . import losses
from .fused_dense import dense_divergence_rows

__all__ = ["FusedLogitLoss", "fused_causal_terms", "fused_rows", "fused_supported", "fused_supported_for"]

_TINY = 1e-30  # a tail mass below this (relative to the row maximum) is recomputed exactly


def _kind(loss_fn) -> tuple:
    """(loss function, temperature) of a ``functools.partial`` of a :mod:`.losses` function."""
    if isinstance(loss_fn, functools.partial):
        return loss_fn.func, loss_fn.keywords.get("temperature", 1.0)
    return loss_fn, 1.0


def fused_supported_for(loss_fn, cached: bool) -> bool:
    """Whether :func:`fused_rows` covers this loss with top-k targets (``cached``) or dense ones (a live teacher's
    logits or final hidden states): forward / reverse KL and JSD for both, not MSE."""
    func, _ = _kind(loss_fn)
    return func in (losses.forward_kl, losses.reverse_kl, losses.generalized_jsd)


def fused_supported(loss_fn, teacher) -> bool:
    """:func:`fused_supported_for` of a TeacherOutput (top-k or dense targets)."""
    return fused_supported_for(loss_fn, cached=teacher.topk_ids is not None)


def _topk_rows(z, ids, t_k, t_tail, kd_mask, c_kd, loss_fn, want_grad):
    """Top-k bucket KD sum, the full log-normaliser and dz of the KD part (before the cross-entropy)."""
    n, vocab = z.shape
    k = ids.shape[1]
    s_k = z.gather(1, ids)  # (n, k)
    m = z.amax(1, keepdim=True)
    e = torch.sub(z, m).exp_()  # (n, V): the one big buffer; becomes dz
    e_k = e.gather(1, ids)
    if k < vocab:
        e.scatter_(1, ids, 0.0)
        tail = e.sum(1, keepdim=True)  # (n, 1) student tail mass / exp(m)
    else:
        tail = torch.zeros_like(m)
    total = tail + e_k.sum(1, keepdim=True)
    lse = m + total.log()
    s_tail = m + tail.log()  # -inf when k = V (empty tail)
    exact = (tail < _TINY).squeeze(1).nonzero().squeeze(1) if k < vocab else ids.new_zeros(0)
    rest = None
    if exact.numel():  # the tail underflowed against the maximum: its own shift
        rest = z.index_select(0, exact).scatter_(1, ids.index_select(0, exact), float("-inf"))
        s_tail.index_copy_(0, exact, rest.logsumexp(1, keepdim=True))
    s_b = torch.cat([s_k, s_tail], 1).requires_grad_(want_grad and c_kd != 0)
    t_b = torch.cat([t_k.float(), t_tail.float()[:, None]], 1)
    with torch.enable_grad():
        kd = loss_fn(s_b, t_b, mask=kd_mask, reduction="sum") if bool(kd_mask.any()) else s_b.new_zeros(())
        g = torch.autograd.grad(kd * c_kd, s_b)[0] if s_b.requires_grad and kd.requires_grad else None
    return kd.detach(), lse, e, total, e_k, g, exact, rest


def fused_rows(z, kd_mask, ce_mask, targets, coeffs, loss_fn, teacher_rows, *, vocab=None, want_grad=True,
               own=False):
    """Sums ``(kd, ce)`` (unweighted) and ``dz = d(coeffs[0] kd + coeffs[1] ce) / dz`` of one block of rows.

    ``z`` (n, V) fp32 student logits; ``kd_mask`` / ``ce_mask`` (n,) bool; ``targets`` (n,) next-token ids (any
    value where ``ce_mask`` is False) or None; ``teacher_rows``: ``("topk", ids (n, k), logits (n, k), tail
    (n,))`` or ``("dense", logits (n, V'))``; ``vocab``: the KD compares the first ``vocab`` logits only.
    ``dz`` is None when ``want_grad`` is False. ``own``: ``z`` is a temporary of the caller that may be
    overwritten (with dense targets the gradient is written into it).
    """
    c_kd, c_ce = float(coeffs[0]), float(coeffs[1])
    func, tau = _kind(loss_fn)
    ce_w = (ce_mask.float() * c_ce)[:, None] if targets is not None else None  # (n, 1)
    dz = lse = None
    if teacher_rows[0] == "topk":
        ids = teacher_rows[1].long()
        k = ids.shape[1]
        kd, lse, e, total, e_k, g, exact, rest = _topk_rows(z, ids, teacher_rows[2], teacher_rows[3], kd_mask,
                                                           c_kd, loss_fn, want_grad)
        if want_grad:  # tail: g_tail * exp(z - s_tail) = g_tail * e / tail; cross-entropy: e / total
            tail = total - e_k.sum(1, keepdim=True)
            scale = torch.zeros_like(total) if ce_w is None else ce_w / total
            if g is not None:
                scale = scale + torch.where(tail > 0, g[:, k:] / tail.clamp(min=_TINY), 0.0)
            dz = e.mul_(scale)
            if exact.numel():  # exact tail softmax for the underflowed rows
                fix = rest.softmax(1) * (g[exact, k:] if g is not None else 0.0)
                if ce_w is not None:
                    fix += torch.exp(z.index_select(0, exact) - lse.index_select(0, exact)) * ce_w[exact]
                dz.index_copy_(0, exact, fix)
            at_ids = g[:, :k] if g is not None else torch.zeros_like(e_k)
            if ce_w is not None:
                at_ids = at_ids + ce_w * e_k / total
            dz.scatter_(1, ids, at_ids)
    else:  # dense targets (a live teacher): fused_dense.py
        beta = loss_fn.keywords.get("beta", 0.5) if isinstance(loss_fn, functools.partial) else 0.5
        kd, ce, dz = dense_divergence_rows(z, teacher_rows[1], kd_mask, ce_mask, targets, coeffs, func, tau, beta,
                                           vocab=vocab, want_grad=want_grad, own=own)
        return torch.stack([kd.float(), ce.float()]), dz
    ce = z.new_zeros(())
    if targets is not None:
        picked = z.gather(1, targets[:, None])
        ce = torch.where(ce_mask, lse.squeeze(1) - picked.squeeze(1), 0.0).sum()
        if want_grad and c_ce != 0:
            dz.scatter_add_(1, targets[:, None], -ce_w)
    return torch.stack([kd.float(), ce.float()]), (dz if want_grad else None)


class FusedLogitLoss(torch.autograd.Function):
    """``apply(z (N, V), coeffs (2,), rows_fn)`` -> (``coeffs . sums`` differentiable in z, ``sums (2,)``).

    ``rows_fn(z_fp32, want_grad)`` is :func:`fused_rows` with everything but the logits bound. The gradient is
    computed in the forward pass (one (N, V) buffer, held until backward, which only scales it).
    """

    @staticmethod
    def forward(ctx, z, coeffs, rows_fn):
        sums, dz = rows_fn(z.detach().float(), True)
        ctx.save_for_backward(dz if dz.dtype == z.dtype else dz.to(z.dtype))
        ctx.mark_non_differentiable(sums)
        return (sums * coeffs.to(sums)).sum(), sums

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums):
        (dz,) = ctx.saved_tensors
        return dz.mul_(grad_loss), None, None  # in place: the buffer is not needed again


def fused_causal_terms(s_logits, teacher, logit_mask, labels, loss_fn, coeffs, vocab=None):
    """(weighted loss, KD sum, task sum) of a causal-LM batch from the student's full logits (B, T, V).

    ``teacher``: a TeacherOutput with top-k targets or dense logits (B, T, ...); ``logit_mask`` (B, T-1);
    ``labels`` (B, T) or None; ``coeffs`` (2,) weights of the KD and task sums. Position i predicts token i + 1,
    as in the model's own loss; the last position counts in neither term.
    """
    bsz, width, v = s_logits.shape
    pad = torch.zeros(bsz, 1, dtype=torch.bool, device=logit_mask.device)
    kd_mask = torch.cat([logit_mask, pad], 1).reshape(-1)
    targets = ce_mask = None
    if labels is not None:
        nxt = torch.cat([labels[:, 1:], labels.new_full((bsz, 1), -100)], 1).reshape(-1)
        ce_mask, targets = nxt.ne(-100), nxt.clamp(min=0)
    flat = lambda x: x.reshape(bsz * width, *x.shape[2:])  # noqa: E731
    if teacher.topk_ids is not None:
        rows = ("topk", flat(teacher.topk_ids), flat(teacher.topk_logits), flat(teacher.tail_logsumexp))
    else:
        rows = ("dense", flat(teacher.logits))
    rows_fn = functools.partial(_bound, kd_mask=kd_mask, ce_mask=ce_mask, targets=targets, coeffs=coeffs,
                                loss_fn=loss_fn, rows=rows, vocab=vocab)
    loss, sums = FusedLogitLoss.apply(s_logits.reshape(bsz * width, v), coeffs, rows_fn)
    return loss, sums[0], sums[1]


def _bound(z, want_grad, *, kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab):
    return fused_rows(z, kd_mask, ce_mask, targets, coeffs, loss_fn, rows, vocab=vocab, want_grad=want_grad)
