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

Sentence-level terms take ``(B, T, d)`` hidden states and a ``(B, T)`` mask and pool them per sequence:
:func:`embedding_cosine` (one item per sequence) and the relation losses :func:`relation_mse` /
:func:`relation_kl`, which compare the ``B x B`` in-batch cosine matrices (items: pairs or rows, see
:func:`~.masks.relation_count`), so their student and teacher widths may differ.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .masks import relation_count

__all__ = [
    "LOG_PROB_FLOOR",
    "forward_kl",
    "embedding_cosine",
    "generalized_jsd",
    "hidden_cosine",
    "hidden_mse",
    "logit_mse",
    "relation_kl",
    "relation_mse",
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


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor | None):
    """(B, T, d) hidden states, (B, T) mask -> fp32 (B, d) means over the attended tokens and the bool (B,)
    rows that have one (a row without one pools to 0)."""
    b, t = hidden.shape[:2]
    m = torch.ones(b, t, dtype=torch.bool, device=hidden.device) if mask is None else mask.bool()
    weights = m.unsqueeze(-1).float()  # (B, T, 1)
    count = weights.sum(1).clamp(min=1.0)  # (B, 1)
    return (hidden.float() * weights).sum(1) / count, m.any(1)


def embedding_cosine(student_hidden, teacher_hidden, mask=None, reduction: str = "sum", num_items=None) -> torch.Tensor:
    """1 - cos(e_S, e_T) per sequence, with e the mean of the hidden states over the attended tokens (the
    sentence embedding of mean-pooling models such as sentence-transformers'; its L2 normalisation does not change
    the cosine). ``student_hidden`` / ``teacher_hidden`` (B, T, d), ``mask`` (B, T); sequences with no attended
    token do not count."""
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"student and teacher shapes differ: {tuple(student_hidden.shape)} vs "
                         f"{tuple(teacher_hidden.shape)}")
    b = student_hidden.shape[0]
    e_s, valid = _mean_pool(student_hidden, mask)  # (B, d), (B,)
    e_t, _ = _mean_pool(teacher_hidden, mask)
    rows = valid.nonzero().squeeze(-1)
    per_row = 1.0 - F.cosine_similarity(e_s.index_select(0, rows), e_t.index_select(0, rows), dim=-1, eps=1e-8)
    return _finish(per_row, rows, b, (b,), reduction, num_items)


def _similarities(student_hidden, teacher_hidden, mask):
    """Cosine matrices S = E E^T (fp32 (n, n), student and teacher) of the mean-pooled embeddings of the n
    sequences with an attended token, and those rows' indices (n,)."""
    if student_hidden.shape[:2] != teacher_hidden.shape[:2]:
        raise ValueError(f"student and teacher (batch, tokens) differ: {tuple(student_hidden.shape[:2])} vs "
                         f"{tuple(teacher_hidden.shape[:2])}")
    e_s, valid = _mean_pool(student_hidden, mask)  # (B, d_S), (B,)
    e_t, _ = _mean_pool(teacher_hidden, mask)  # (B, d_T)
    rows = valid.nonzero().squeeze(-1)  # (n,)
    e_s = F.normalize(e_s.index_select(0, rows), dim=-1, eps=1e-8)  # (n, d_S)
    e_t = F.normalize(e_t.index_select(0, rows), dim=-1, eps=1e-8)  # (n, d_T)
    return e_s @ e_s.T, e_t @ e_t.T, rows


def relation_mse(student_hidden, teacher_hidden, mask=None, reduction: str = "sum",
                 num_items=None) -> torch.Tensor:
    """Relation (in-batch similarity) distillation: sum over ordered pairs i != j of
    (S_S[i, j] - S_T[i, j])^2, with S = E E^T the cosine matrix of the L2-normalised mean-pooled embeddings
    (see :func:`embedding_cosine`) of the batch's sequences with an attended token.

    S is (B x B) whatever the width, so ``student_hidden`` (B, T, d_S) and ``teacher_hidden`` (B, T, d_T) may
    differ in width and need no projection. ``reduction="none"``: (B,) per sequence (its row of pairs), 0
    for a sequence without attended tokens; ``"mean"`` divides by :func:`~.masks.relation_count` (the
    pairs). Fewer than two valid sequences give 0.
    """
    s_s, s_t, rows = _similarities(student_hidden, teacher_hidden, mask)
    off = ~torch.eye(rows.numel(), dtype=torch.bool, device=s_s.device)  # (n, n): i != j
    per_row = torch.where(off, s_s - s_t, torch.zeros_like(s_s)).pow(2).sum(-1)  # (n,)
    b, items = student_hidden.shape[0], relation_count(rows.numel(), "mse")
    return _finish(per_row, rows, b, (b,), reduction, items if num_items is None else num_items)


def relation_kl(student_hidden, teacher_hidden, mask=None, temperature: float = 0.05, reduction: str = "sum",
                num_items=None) -> torch.Tensor:
    """Listwise relation distillation: per sequence i,
    KL(softmax(S_T[i, j != i] / tau) || softmax(S_S[i, j != i] / tau)), the teacher's distribution over the
    batch's other sequences (similarity distillation as in CompRess / SEED); S as in :func:`relation_mse` (no
    projection whatever the widths; not scaled by tau^2).

    ``reduction="none"``: (B,) per sequence; ``"mean"`` divides by :func:`~.masks.relation_count` (rows with
    at least one other sequence). Fewer than two valid sequences give 0.
    """
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}")
    s_s, s_t, rows = _similarities(student_hidden, teacher_hidden, mask)
    b, n = student_hidden.shape[0], rows.numel()
    if n < 2:  # no other sequence to rank: 0 (still attached to the graph, so backward works)
        per_row = (s_s * 0.0).sum(-1)  # (n,)
    else:
        diag = torch.eye(n, dtype=torch.bool, device=s_s.device)  # (n, n)
        # the diagonal (i with itself) is left out of each row's softmax, then zeroed (no -inf - -inf)
        log_s = F.log_softmax((s_s / temperature).masked_fill(diag, -math.inf), -1).masked_fill(diag, 0.0)
        log_t = F.log_softmax((s_t / temperature).masked_fill(diag, -math.inf), -1).masked_fill(diag, 0.0)
        p_t = log_t.exp().masked_fill(diag, 0.0)  # (n, n): row i is the teacher's distribution over j != i
        per_row = (p_t * (log_t - log_s)).sum(-1)  # (n,)
    items = relation_count(n, "kl")
    return _finish(per_row, rows, b, (b,), reduction, items if num_items is None else num_items)


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
