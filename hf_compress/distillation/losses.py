"""Distillation losses as pure tensor functions.

Every function takes a student tensor, a teacher tensor of the same shape and an optional boolean ``mask`` over
the leading dimensions (``True`` = the position counts), and returns:

- ``reduction="none"``: the per-position loss, zero where masked, shape ``logits.shape[:-1]``;
- ``reduction="sum"``: the sum over valid positions (what the trainer uses: it divides by the number of valid
  positions of the whole gradient-accumulation window itself);
- ``reduction="mean"``: the sum divided by ``num_items`` (default: the number of valid positions).

Logit losses run in fp32 log-space. Masked rows, and rows whose logits are all ``-inf``, are left out before any
arithmetic, so they never produce NaN. ``-inf`` logits (a masked vocabulary entry) give probability 0; log
probabilities are floored at ``LOG_PROB_FLOOR`` so that a token the student gives probability 0 but the teacher
does not costs a large finite amount instead of ``inf``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = [
    "LOG_PROB_FLOOR",
    "forward_kl",
    "embedding_cosine",
    "generalized_jsd",
    "hidden_cosine",
    "hidden_mse",
    "logit_mse",
    "reverse_kl",
    "token_cross_entropy",
    "topk_buckets",
]

#: log-probabilities are clamped from below here (exp(-1e4) is 0 in fp32; finite logits never get this low)
LOG_PROB_FLOOR = -1.0e4
_REDUCTIONS = ("none", "sum", "mean")


def _flatten(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None):
    """(..., D) tensors and a (...) mask -> fp32 (N, D), (N, D), bool (N,) with shape checks."""
    if student.shape != teacher.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student.shape)} vs {tuple(teacher.shape)}")
    dim = student.shape[-1]
    s = student.reshape(-1, dim).float()
    t = teacher.reshape(-1, dim).float()
    if mask is None:
        m = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
    else:
        if tuple(mask.shape) != tuple(student.shape[:-1]):
            raise ValueError(f"mask shape {tuple(mask.shape)} must equal the leading dims {tuple(student.shape[:-1])}")
        m = mask.reshape(-1).to(device=s.device, dtype=torch.bool)
    return s, t, m


def _finish(per_row: torch.Tensor, rows: torch.Tensor, n: int, shape, reduction: str, num_items):
    """Scatter per-valid-row losses back (``none``) or reduce them (``sum``/``mean``)."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {', '.join(_REDUCTIONS)}, got {reduction!r}")
    if reduction == "none":
        out = per_row.new_zeros(n)
        return out.index_copy(0, rows, per_row).reshape(shape)
    total = per_row.sum()
    if reduction == "sum":
        return total
    denom = rows.numel() if num_items is None else num_items
    if torch.is_tensor(denom):
        return total / denom.to(total).clamp(min=1)
    return total / max(float(denom), 1.0)


def _valid_log_probs(student_logits, teacher_logits, mask, temperature: float):
    """Rows that count (mask and at least one finite logit on both sides) and their tempered log-softmax."""
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}")
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    m = m & torch.isfinite(s).any(-1) & torch.isfinite(t).any(-1)
    rows = m.nonzero().squeeze(-1)  # (R,)
    log_s = F.log_softmax(s.index_select(0, rows) / temperature, dim=-1).clamp(min=LOG_PROB_FLOOR)  # (R, V)
    log_t = F.log_softmax(t.index_select(0, rows) / temperature, dim=-1).clamp(min=LOG_PROB_FLOOR)  # (R, V)
    return log_s, log_t, rows, s.shape[0]


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities: sum_v p_v (log p_v - log q_v); p_v = 0 contributes 0."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def forward_kl(student_logits, teacher_logits, mask=None, temperature: float = 1.0,
               reduction: str = "sum", num_items=None) -> torch.Tensor:
    """tau^2 * KL(p_T^tau || p_S^tau) per position (Hinton et al.): mode-covering."""
    log_s, log_t, rows, n = _valid_log_probs(student_logits, teacher_logits, mask, temperature)
    per_row = _kl_rows(log_t, log_s) * temperature**2
    return _finish(per_row, rows, n, student_logits.shape[:-1], reduction, num_items)


def reverse_kl(student_logits, teacher_logits, mask=None, temperature: float = 1.0,
               reduction: str = "sum", num_items=None) -> torch.Tensor:
    """tau^2 * KL(p_S^tau || p_T^tau) per position: mode-seeking."""
    log_s, log_t, rows, n = _valid_log_probs(student_logits, teacher_logits, mask, temperature)
    per_row = _kl_rows(log_s, log_t) * temperature**2
    return _finish(per_row, rows, n, student_logits.shape[:-1], reduction, num_items)


def generalized_jsd(student_logits, teacher_logits, mask=None, temperature: float = 1.0, beta: float = 0.5,
                    reduction: str = "sum", num_items=None) -> torch.Tensor:
    """tau^2 * [beta KL(p_T || m) + (1 - beta) KL(p_S || m)] with m = beta p_T + (1 - beta) p_S.

    ``beta=0.5`` is the symmetric Jensen-Shannon divergence; ``beta`` must lie strictly inside (0, 1) (at the ends
    the mixture equals one side and the divergence is identically 0).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"`beta` must be strictly between 0 and 1, got {beta}")
    log_s, log_t, rows, n = _valid_log_probs(student_logits, teacher_logits, mask, temperature)
    log_m = torch.logsumexp(torch.stack([log_t + math.log(beta), log_s + math.log(1.0 - beta)]), dim=0)  # (R, V)
    per_row = (beta * _kl_rows(log_t, log_m) + (1.0 - beta) * _kl_rows(log_s, log_m)) * temperature**2
    return _finish(per_row, rows, n, student_logits.shape[:-1], reduction, num_items)


def logit_mse(student_logits, teacher_logits, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """Mean over the vocabulary of (z_S - z_T)^2 per position; entries non-finite on either side are left out."""
    s, t, m = _flatten(student_logits, teacher_logits, mask)
    rows = m.nonzero().squeeze(-1)
    s, t = s.index_select(0, rows), t.index_select(0, rows)  # (R, V)
    finite = torch.isfinite(s) & torch.isfinite(t)
    sq = torch.where(finite, s - t, torch.zeros_like(s)).pow(2)
    per_row = sq.sum(-1) / finite.sum(-1).clamp(min=1)
    return _finish(per_row, rows, m.shape[0], student_logits.shape[:-1], reduction, num_items)


def hidden_mse(student_hidden, teacher_hidden, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """Mean over the hidden dimension of (h_S - h_T)^2 per token (project h_S to the teacher width first)."""
    s, t, m = _flatten(student_hidden, teacher_hidden, mask)
    rows = m.nonzero().squeeze(-1)
    per_row = (s.index_select(0, rows) - t.index_select(0, rows)).pow(2).mean(-1)
    return _finish(per_row, rows, m.shape[0], student_hidden.shape[:-1], reduction, num_items)


def hidden_cosine(student_hidden, teacher_hidden, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """1 - cos(h_S, h_T) per token (0 when aligned, 2 when opposite)."""
    s, t, m = _flatten(student_hidden, teacher_hidden, mask)
    rows = m.nonzero().squeeze(-1)
    per_row = 1.0 - F.cosine_similarity(s.index_select(0, rows), t.index_select(0, rows), dim=-1, eps=1e-8)
    return _finish(per_row, rows, m.shape[0], student_hidden.shape[:-1], reduction, num_items)


def embedding_cosine(student_hidden, teacher_hidden, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """1 - cos(e_S, e_T) per sequence, with e the mean of the hidden states over the attended tokens (the
    sentence embedding of mean-pooling models such as sentence-transformers'; its L2 normalisation does not change
    the cosine). ``student_hidden`` / ``teacher_hidden`` (B, T, d), ``mask`` (B, T); sequences with no attended
    token do not count."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student_hidden.shape)} vs "
                         f"{tuple(teacher_hidden.shape)}")
    b, t = student_hidden.shape[:2]
    m = torch.ones(b, t, dtype=torch.bool, device=student_hidden.device) if mask is None else mask.bool()
    weights = m.unsqueeze(-1).float()  # (B, T, 1)
    count = weights.sum(1).clamp(min=1.0)  # (B, 1)
    e_s = (student_hidden.float() * weights).sum(1) / count  # (B, d)
    e_t = (teacher_hidden.float() * weights).sum(1) / count
    rows = m.any(1).nonzero().squeeze(-1)
    per_row = 1.0 - F.cosine_similarity(e_s.index_select(0, rows), e_t.index_select(0, rows), dim=-1, eps=1e-8)
    return _finish(per_row, rows, b, (b,), reduction, num_items)


def token_cross_entropy(logits, targets, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """-log softmax(logits)[target] per position in fp32 (for perplexity); ``targets`` has shape logits[:-1]."""
    dim = logits.shape[-1]
    z = logits.reshape(-1, dim).float()
    m = torch.ones(z.shape[0], dtype=torch.bool, device=z.device) if mask is None else mask.reshape(-1).bool()
    rows = m.nonzero().squeeze(-1)
    log_p = F.log_softmax(z.index_select(0, rows), dim=-1)  # (R, V)
    per_row = -log_p.gather(-1, targets.reshape(-1).index_select(0, rows)[:, None]).squeeze(-1)
    return _finish(per_row, rows, z.shape[0], logits.shape[:-1], reduction, num_items)


def topk_buckets(student_logits, topk_ids, topk_logits, tail_logsumexp):
    """Student and teacher as ``k + 1`` buckets: the teacher's top-k tokens and one tail bucket for the rest.

    ``student_logits`` (..., V), ``topk_ids`` / ``topk_logits`` (..., k) and ``tail_logsumexp`` (...) of the
    teacher -> two fp32 (..., k + 1) "logit" tensors whose softmaxes are the exact bucket probabilities at
    tau = 1: the tail bucket's logit is the log-sum-exp of the logits outside the k ids (``-inf`` when k = V,
    so the tail has probability 0 and every dense loss gets back its exact value). Feed them to
    :func:`forward_kl`, :func:`reverse_kl` or :func:`generalized_jsd`.

    Temperature: those losses divide both bucket tensors by tau, i.e. they re-temper the k logits (their
    ratios are the exact tempered ratios) and treat the tail as ONE token whose logit is its log-sum-exp. The
    true tempered tail (sum of exp(z_v / tau) over the tail) is larger for tau > 1 (the many small tokens gain),
    so at tau != 1 the target is an approximation; at tau = 1 it is exact. The loss stays a divergence between
    two distributions treated alike, zero exactly when the student's k + 1 buckets equal the teacher's.
    """
    s = student_logits.float()
    ids = topk_ids.long()
    s_k = s.gather(-1, ids)  # (..., k)
    if ids.shape[-1] >= s.shape[-1]:  # k = V: no tail
        s_tail = torch.full_like(s_k[..., :1], float("-inf"))
    else:
        rest = s.scatter(-1, ids, float("-inf"))  # (..., V)
        top = rest.amax(-1, keepdim=True).detach().clamp(min=-1e30)  # finite shift even for an all -inf row
        s_tail = torch.log((rest - top).exp().sum(-1, keepdim=True).clamp(min=1e-30)) + top  # (..., 1)
    t = torch.cat([topk_logits.float(), tail_logsumexp.float()[..., None]], -1)  # (..., k + 1)
    return torch.cat([s_k, s_tail], -1), t
