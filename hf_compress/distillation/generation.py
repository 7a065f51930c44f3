"""On-policy and sequence-level distillation for causal LMs: completions sampled from a batch's prompts.

GKD-style (Agarwal et al., 2024): with probability ``lmbda`` a micro-batch's completions are sampled from the
student (on-policy); otherwise, with ``seq_kd``, from the teacher (sequence-level KD); otherwise the batch is
used as it is. The prompt of a row is its attended tokens before the first label that counts (``labels !=
-100``), or the whole attended row when it has no labels. The new batch is the left-padded prompt followed by
at most ``max_new_tokens`` sampled tokens (``generation_temperature``, separate from the loss temperature):
``labels`` are the sampled tokens up to and including the first end-of-sequence token, ``-100`` elsewhere, and
``position_ids`` count attended tokens, as ``generate`` does. The loss then uses the usual masks and reduction.

Sampling runs under its own seed (``seed``), so a run is reproducible and a manual ``generate`` with
``torch.manual_seed(seed)`` gives the same tokens.
"""

from __future__ import annotations

import torch

from ..core.modules import eval_mode

__all__ = ["generate_completions", "prompts_of"]


def prompts_of(inputs: dict) -> list[torch.Tensor]:
    """Each row's prompt token ids (1-D), see the module docstring."""
    ids = inputs["input_ids"]
    attn = inputs.get("attention_mask")
    attn = torch.ones_like(ids, dtype=torch.bool) if attn is None else attn.bool()
    labels = inputs.get("labels")
    out = []
    for b in range(ids.shape[0]):
        keep = attn[b]
        if labels is not None and bool(labels[b].ne(-100).any()):
            first = int(labels[b].ne(-100).nonzero()[0])
            keep = keep.clone()
            keep[first:] = False
        out.append(ids[b][keep])
    return out


def _special_ids(model) -> tuple[int, int | None]:
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    eos = getattr(model.config, "eos_token_id", None) if eos is None else eos
    eos = eos[0] if isinstance(eos, (list, tuple)) else eos
    pad = getattr(gen, "pad_token_id", None) if gen is not None else None
    pad = getattr(model.config, "pad_token_id", None) if pad is None else pad
    pad = eos if pad is None else pad
    return (0 if pad is None else int(pad)), (None if eos is None else int(eos))


def left_padded(prompts: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (B, P), attention mask (B, P)) with the prompts right-aligned."""
    width = max(1, max(p.numel() for p in prompts))
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=prompts[0].device)
    attn = torch.zeros_like(ids)
    for b, p in enumerate(prompts):
        if p.numel():
            ids[b, width - p.numel():] = p
            attn[b, width - p.numel():] = 1
    return ids, attn


@torch.no_grad()
def generate_completions(model, inputs: dict, max_new_tokens: int, temperature: float, seed: int) -> dict:
    """The batch rebuilt from ``model``'s sampled completions of its prompts (see the module docstring)."""
    pad_id, eos_id = _special_ids(model)
    ids, attn = left_padded(prompts_of(inputs), pad_id)
    with eval_mode(model), torch.random.fork_rng(devices=[ids.device] if ids.device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = model.generate(input_ids=ids, attention_mask=attn, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, min_new_tokens=0,
                             pad_token_id=pad_id, eos_token_id=eos_id)
    new = out[:, ids.shape[1]:]  # (B, N)
    valid = torch.ones_like(new, dtype=torch.bool)
    if eos_id is not None:  # keep up to and including the first end-of-sequence token
        seen = new.eq(eos_id).long().cumsum(-1)
        valid = (seen == 0) | ((seen == 1) & new.eq(eos_id))
    mask = torch.cat([attn.bool(), valid], 1)  # (B, P + N)
    labels = torch.cat([torch.full_like(ids, -100), new.masked_fill(~valid, -100)], 1)
    return {"input_ids": out.masked_fill(~mask, pad_id), "attention_mask": mask.long(), "labels": labels,
            "position_ids": (mask.long().cumsum(-1) - 1).clamp(min=0)}
