"""Logit losses of a causal LM in row chunks, LM head included: the full (N, V) student logits never exist.

:class:`ChunkedHeadLoss` takes the student's final hidden states of the N rows that count, the LM head's weight
(and bias) and a function that turns one chunk of fp32 logits into the per-term loss sums (the KD term against
the teacher's rows of that chunk, the task cross-entropy). Per chunk it projects the rows to logits, computes the
terms and their gradient with respect to the chunk's hidden states and the head weight, and drops the logits
before the next chunk. The gradient of the weighted sum is therefore computed during the forward pass (as fused
linear-cross-entropy kernels do) and only scaled in backward: peak memory holds one chunk of logits instead of
all of them, and no extra head matmul is spent on recomputation.

Because the gradient is taken in the forward pass, the term weights (``alpha / window count``) must be known
then: the function returns the weighted loss (differentiable) and the raw term sums (for logging, not
differentiable).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["ChunkedHeadLoss", "chunked_causal_terms", "chunked_head_loss", "head_logits", "lm_head_of"]


def head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                softcap: float | None) -> torch.Tensor:
    """The LM head on ``hidden`` (n, d) -> fp32 (n, V), with the model's final logit soft-capping if any."""
    logits = F.linear(hidden, weight, bias).float()
    if softcap and logits.requires_grad:
        logits = torch.tanh(logits / softcap) * softcap
    elif softcap:  # no autograd: in place, one buffer
        logits.div_(softcap).tanh_().mul_(softcap)
    return logits


class ChunkedHeadLoss(torch.autograd.Function):
    """``apply(hidden (N, d), weight (V, d), bias (V,) | None, coeffs (n_terms,), chunk_rows, softcap, row_terms)``
    -> (``sum_j coeffs_j * term_j`` differentiable, ``term sums (n_terms,)``).

    ``row_terms(logits (n, V) fp32, lo, hi)`` returns the ``(n_terms,)`` loss sums of rows ``lo:hi``.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, coeffs, chunk_rows: int, softcap, row_terms, into_grad: bool = False):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        want_b = bias is not None and ctx.needs_input_grad[2]
        grad_h = torch.zeros_like(hidden) if want_h else None
        # into_grad: add the head's gradient straight into an existing fp32 weight.grad (no (V, d) buffer held
        # until backward); only for a backward that is not scaled (checked there) and not synchronised by hooks
        ctx.into_grad = into_grad and want_w and weight.grad is not None and weight.grad.dtype == torch.float32
        if ctx.into_grad:
            grad_w = weight.grad
        else:
            grad_w = torch.zeros_like(weight, dtype=torch.float32) if want_w else None  # the only (V, d) buffer
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if want_b else None
        sums = torch.zeros(coeffs.numel(), dtype=torch.float32, device=hidden.device)
        c = coeffs.detach().to(device=hidden.device, dtype=torch.float32)
        fused = getattr(row_terms, "fused", False)
        for lo in range(0, hidden.shape[0], chunk_rows):
            hi = min(lo + chunk_rows, hidden.shape[0])
            h = hidden[lo:hi].detach()
            if fused:  # row_terms gives the terms and their (weighted) logit gradient itself: no autograd
                terms, dz = _fused_chunk(h, weight.detach(), None if bias is None else bias.detach(), softcap,
                                         row_terms, lo, hi)
            else:
                with torch.enable_grad():
                    z = F.linear(h, weight.detach(), None if bias is None else bias.detach()).requires_grad_()
                    logits = torch.tanh(z.float() / softcap) * softcap if softcap else z.float()
                    terms = row_terms(logits, lo, hi)  # (n_terms,)
                    if terms.requires_grad:
                        (dz,) = torch.autograd.grad((terms * c).sum(), z)  # (n, V): the chunk's logit gradient
                    else:
                        dz = None
                del z, logits
            if dz is not None:  # the head's backward by hand: no per-chunk (V, d) temporary
                if want_h:
                    grad_h[lo:hi] = (dz.to(weight.dtype) @ weight).to(hidden.dtype)
                if want_w:
                    grad_w.addmm_(dz.float().t(), h.float())
                if want_b:
                    grad_b += dz.float().sum(0)
            sums += terms.detach().float()
            del dz, terms  # before the next chunk's logits: else two chunks' (n, V) buffers coexist at the peak
        # kept as attributes, not saved tensors: backward hands them on with no other reference (no copy)
        ctx.grads = [grad_h, None if ctx.into_grad else grad_w, grad_b]
        ctx.wants = (want_h, want_w and not ctx.into_grad, want_b)
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
        ctx.mark_non_differentiable(sums)
        return (sums * c).sum(), sums

    @staticmethod
    def backward(ctx, grad_loss, _grad_sums):
        if ctx.into_grad and not bool(grad_loss == 1):
            raise RuntimeError("ChunkedHeadLoss(into_grad=True) added the LM head's gradient during the forward pass "
                               f"and needs an unscaled backward (gradient 1), got {float(grad_loss)}: pass into_grad=False")
        grads, ctx.grads = ctx.grads, None
        out = []
        for i, (want, dtype) in enumerate(zip(ctx.wants, (None, *ctx.dtypes))):
            g = grads[i].mul_(grad_loss) if want else None  # in place: the buffers are not needed again
            grads[i] = None
            out.append(g if g is None or dtype is None else g.to(dtype))
        return (*out, None, None, None, None, None)


def _fused_chunk(h, weight, bias, softcap, row_terms, lo, hi):
    """(terms, dz) of one chunk from a fused ``row_terms`` (its gradient is with respect to the capped logits)."""
    logits = F.linear(h, weight, bias).float()  # (n, V): the chunk's one logit buffer
    if softcap:
        logits.div_(softcap).tanh_()
        capped = logits * softcap
        terms, dz = row_terms(capped, lo, hi)
        del capped
        dz.mul_(logits.square_().neg_().add_(1.0))  # d tanh: 1 - tanh^2
    else:
        terms, dz = row_terms(logits, lo, hi)
    return terms, dz


def chunked_head_loss(hidden, weight, bias, coeffs, chunk_rows: int, softcap, row_terms, into_grad: bool = False):
    """:class:`ChunkedHeadLoss` when a gradient is wanted, else the same loop without gradients."""
    needs = torch.is_grad_enabled() and (hidden.requires_grad or weight.requires_grad)
    if needs:
        return ChunkedHeadLoss.apply(hidden, weight, bias, coeffs, chunk_rows, softcap, row_terms, into_grad)
    sums = torch.zeros(coeffs.numel(), device=hidden.device)
    with torch.no_grad():
        for lo in range(0, hidden.shape[0], chunk_rows):
            hi = min(lo + chunk_rows, hidden.shape[0])
            logits = head_logits(hidden[lo:hi], weight, bias, softcap)
            got = row_terms(logits, lo, hi, want_grad=False) if getattr(row_terms, "fused", False) else \
                row_terms(logits, lo, hi)
            sums += (got[0] if isinstance(got, tuple) else got).float()
            del logits, got  # one chunk's logits at a time
    return (sums * coeffs.to(sums)).sum(), sums


def lm_head_of(model):
    """(weight, bias, final logit soft-cap) of a causal LM's output projection."""
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        from ..errors import HfCompressError

        raise HfCompressError(f"`logit_chunk_size` needs an nn.Linear LM head; {type(model).__name__} has "
                              f"{type(head).__name__}: set logit_chunk_size=0")
    return head.weight, head.bias, getattr(model.config, "final_logit_softcapping", None)


def chunked_causal_terms(s_hidden, head, teacher, logit_mask, labels, loss_fn, coeffs, chunk_rows: int,
                         vocab: int | None = None, into_grad: bool = False):
    """KD and task sums of a causal LM batch, chunked over the rows that count.

    ``s_hidden`` (B, T, d): the student's final hidden states; ``head``: :func:`lm_head_of` of the student;
    ``teacher``: a TeacherOutput (dense logits, top-k, or ``final_hidden`` + ``head``); ``logit_mask`` (B, T-1);
    ``labels`` (B, T) or None; ``coeffs`` (2,): weights of the KD and task sums; ``vocab``: compare only the
    first ``vocab`` logits (vocabularies that differ by padding rows); ``into_grad``: see :class:`ChunkedHeadLoss`.
    Returns (weighted loss, KD sum, task sum).
    """
    from .fused import fused_rows, fused_supported
    from .losses import token_cross_entropy, topk_buckets

    task_mask = labels[:, 1:].ne(-100) if labels is not None else torch.zeros_like(logit_mask)
    rows = logit_mask | (task_mask if float(coeffs[1]) != 0 else torch.zeros_like(task_mask))  # (B, T-1)
    pick = lambda x: x[:, :-1][rows]  # noqa: E731  (B, T, ...) -> (N, ...)
    h, kd_mask = pick(s_hidden), logit_mask[rows]  # (N, d), (N,)
    targets = labels[:, 1:][rows].clamp(min=0) if labels is not None else None
    t_task = task_mask[rows]
    if teacher.topk_ids is not None:
        t_rows = (pick(teacher.topk_ids), pick(teacher.topk_logits), pick(teacher.tail_logsumexp))
    elif teacher.final_hidden is not None:
        t_rows = (pick(teacher.final_hidden),)
    else:
        t_rows = (pick(teacher.logits),)

    def row_terms(logits, lo, hi):
        zero = logits.new_zeros(())
        kd = zero
        if float(coeffs[0]) != 0 and bool(kd_mask[lo:hi].any()):
            s_kd = logits[:, :vocab]
            if teacher.topk_ids is not None:
                s_b, t_b = topk_buckets(s_kd, *(t[lo:hi] for t in t_rows))
            elif teacher.final_hidden is not None:
                with torch.no_grad():
                    t_b = head_logits(t_rows[0][lo:hi], *teacher.head)[:, :vocab]
                s_b = s_kd
            else:
                s_b, t_b = s_kd, t_rows[0][lo:hi, :vocab]
            kd = loss_fn(s_b, t_b, mask=kd_mask[lo:hi], reduction="sum")
        task = zero
        if targets is not None and float(coeffs[1]) != 0:
            task = token_cross_entropy(logits, targets[lo:hi], mask=t_task[lo:hi], reduction="sum")
        return torch.stack([kd, task])

    def fused_terms(logits, lo, hi, want_grad=True):  # one softmax pass per chunk (fused.py)
        if teacher.topk_ids is not None:
            rows = ("topk", *(t[lo:hi] for t in t_rows))
        elif teacher.final_hidden is not None:
            with torch.no_grad():
                rows = ("dense", head_logits(t_rows[0][lo:hi], *teacher.head))
        else:
            rows = ("dense", t_rows[0][lo:hi])
        return fused_rows(logits, kd_mask[lo:hi], t_task[lo:hi], None if targets is None else targets[lo:hi],
                          coeffs, loss_fn, rows, vocab=vocab, want_grad=want_grad,
                          own=teacher.final_hidden is not None and want_grad)

    if fused_supported(loss_fn, teacher):
        fused_terms.fused = True
        row_terms = fused_terms
    loss, sums = chunked_head_loss(h, head[0], head[1], coeffs, chunk_rows, head[2], row_terms, into_grad)
    return loss, sums[0], sums[1]
