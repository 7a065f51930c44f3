"""Dense logit KD (a live teacher's full logits) + the task cross-entropy, with the gradient written by hand.

With ``a = (z - max z) / tau``, ``b = (y - max y) / tau`` (student, teacher; shifted, so every term is O(1)),
``log p = a - log sum e^a``, ``log q = b - log sum e^b``:

- forward KL ``tau^2 sum q (log q - log p)``; its logit gradient ``tau (p - q)``;
- reverse KL ``tau^2 sum p (log p - log q)``; its logit gradient ``tau p (r - sum p r)``, ``r = log p - log q``;
- JSD ``tau^2 [beta sum q (log q - log m) + (1 - beta) sum p (log p - log m)]``, ``m = beta q + (1 - beta) p``;
  gradient ``tau (1 - beta) p (l - sum p l)``, ``l = log p - log m`` (the teacher terms do not depend on z).

Every (rows x V) quantity is made in column blocks of about 1M elements and dropped: one pass for the row
normalisers, one for the sums, one (only when a gradient is wanted) that recomputes the block and writes the
gradient. So the only (rows x V) buffers are the two logit inputs and the gradient, which goes into ``z`` itself
when the caller owns it (a chunk's temporaries).
"""

from __future__ import annotations

import math

import torch

from . import losses

__all__ = ["dense_divergence_rows"]


_BLOCK = (1 << 20, 1024)  # elements per (rows x columns) block, fewest columns


def _blocks(width: int, rows: int, stop: int | None = None):
    """Column ranges of about _BLOCK[0] elements covering ``width``; one range ends at ``stop``."""
    step = max(_BLOCK[1], _BLOCK[0] // max(rows, 1))
    edges = sorted({*range(0, width, step), *([stop] if stop is not None and 0 < stop < width else [])})
    return [(c, min(nxt, width)) for c, nxt in zip(edges, [*edges[1:], width])]


def _log_norm(x: torch.Tensor, m: torch.Tensor, tau: float, blocks) -> torch.Tensor:
    """log sum_v exp((x - m) / tau) per row (n, 1), block by block."""
    total = x.new_zeros(x.shape[0], 1)
    for c, e in blocks:
        total += x[:, c:e].sub(m).div_(tau).exp_().sum(1, keepdim=True)
    return total.log_()


def dense_divergence_rows(z, y, kd_mask, ce_mask, targets, coeffs, func, tau: float, beta: float = 0.5, *,
                          vocab=None, want_grad=True, own=False):
    """``(kd sum, ce sum, dz)`` of one block of rows: ``func`` is :func:`.losses.forward_kl`,
    :func:`.losses.reverse_kl` or :func:`.losses.generalized_jsd`; arguments as :func:`.fused.fused_rows` (``y`` the dense teacher logits; the
    KD compares the first ``vocab`` columns). ``dz`` is None when ``want_grad`` is False; ``own``: write it into z."""
    if func not in (losses.forward_kl, losses.reverse_kl, losses.generalized_jsd):
        raise ValueError(f"dense fused targets support forward_kl, reverse_kl and jsd, got {func.__name__}")
    n, width = z.shape
    v = y.shape[1] if vocab is None else vocab
    fwd, rev = func is losses.forward_kl, func is losses.reverse_kl
    c_kd, c_ce = float(coeffs[0]), float(coeffs[1])
    zs, ys = z[:, :v], y[:, :v].float()
    kd_blocks, all_blocks = _blocks(v, n), _blocks(width, n, stop=v)
    m_s, m_t = zs.amax(1, keepdim=True), ys.amax(1, keepdim=True)
    ln_s, ln_t = _log_norm(zs, m_s, tau, kd_blocks), _log_norm(ys, m_t, tau, kd_blocks)
    log_beta, log_rest = (math.log(beta), math.log1p(-beta)) if not (fwd or rev) else (0.0, 0.0)

    def pieces(c, e):  # columns c:e -> p and forward: q, sum q (log q - log p); reverse: log p - log q;
        lp = zs[:, c:e].sub(m_s).div_(tau).sub_(ln_s)  # JSD: log p - log m, sum q (log q - log m)
        lq = ys[:, c:e].sub(m_t).div_(tau).sub_(ln_t)
        p = lp.exp()
        if fwd:
            q = lq.exp()
            return p, q, torch.einsum("nv,nv->n", q, lq.sub_(lp))[:, None]
        if rev:
            return p, lp.sub_(lq), None
        lm = torch.logaddexp(lq + log_beta, lp + log_rest)
        teacher = torch.exp(lq).mul_(lq - lm).sum(1, keepdim=True)  # sum q (log q - log m)
        return p, lp.sub_(lm), teacher

    s_pl, t_term = z.new_zeros(n, 1), z.new_zeros(n, 1)  # sum p * (r or l); sum q (log q - log p or m)
    for c, e in kd_blocks:
        p, l, teacher = pieces(c, e)
        if not fwd:
            s_pl += torch.einsum("nv,nv->n", p, l)[:, None]
        if teacher is not None:
            t_term += teacher
    per_row = t_term if fwd else s_pl if rev else beta * t_term + (1.0 - beta) * s_pl
    kd = (per_row.squeeze(1) * tau**2 * kd_mask).sum()
    ce, ce_w = z.new_zeros(()), None
    if targets is not None:
        picked = z.gather(1, targets[:, None])
        m1, ln1 = (m_s, ln_s) if tau == 1.0 and v == width else (None, None)
        if m1 is None:
            m1 = z.amax(1, keepdim=True)
            ln1 = _log_norm(z, m1, 1.0, all_blocks)
        ce = torch.where(ce_mask, (m1 + ln1 - picked).squeeze(1), 0.0).sum()
        ce_w = (ce_mask.float() * c_ce)[:, None]
    if not want_grad:
        return kd, ce, None
    dz = z if own else torch.empty_like(z)
    w = (kd_mask.float() * (tau * c_kd * (1.0 - beta if not (fwd or rev) else 1.0)))[:, None]  # (n, 1)
    for c, e in all_blocks:
        g = None
        if c < v:  # KD columns (blocks end at v)
            p, l, _ = pieces(c, e)
            g = p.sub_(l).mul_(w) if fwd else l.sub_(s_pl).mul_(p).mul_(w)
        if ce_w is not None:  # the cross-entropy's softmax, read before the block is overwritten
            soft = z[:, c:e].sub(m1).sub_(ln1).exp_().mul_(ce_w)
            g = soft if g is None else g.add_(soft)
        dz[:, c:e] = g if g is not None else 0.0
    if ce_w is not None and c_ce != 0:
        dz.scatter_add_(1, targets[:, None], -ce_w)
    return kd, ce, dz
