"""head_importance against a finite-difference reference; select_heads on constructed scores."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import HfCompressError, arch, head_importance, select_heads
from hf_compress.errors import SurgeryError
from hf_compress.methods.heads.prune import HeadPruningConfig


def _lm_loss_terms(model, batch) -> torch.Tensor:
    """Each example's share of the batch LM loss (sum of its token losses / tokens in the batch), in float64
    (the models' own loss upcasts to float32: too coarse for finite differences)."""
    labels = batch["input_ids"].clone()
    labels[batch["attention_mask"] == 0] = -100
    with torch.no_grad():
        logits = model(**batch).logits.double()  # (B, T, V)
    if arch.get_arch(model).causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, T)
    return nll.sum(1) / (labels != -100).sum()


def _scale_head(model, layer: int, head: int, factor: float) -> None:
    """Multiply the output-projection input columns of one head by ``factor`` (independent of the hooks)."""
    spec, d = arch.get_arch(model), arch.head_dim(model)
    o = arch.get_submodule(arch.get_layers(model)[layer], spec.o)
    cols = slice(head * d, (head + 1) * d)
    with torch.no_grad():
        if spec.conv1d:
            o.weight[cols, :] *= factor  # Conv1D weight (in, out)
        else:
            o.weight[:, cols] *= factor


def _finite_difference(model, batch, eps=1e-3) -> torch.Tensor:
    """Michel et al.'s importance by central differences: sum over examples of |d loss share / d scale|."""
    n_layers, n_heads = arch.num_layers(model), arch.num_heads(model)
    scores = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    for layer in range(n_layers):
        for head in range(n_heads):
            _scale_head(model, layer, head, 1 + eps)
            up = _lm_loss_terms(model, batch)
            _scale_head(model, layer, head, (1 - eps) / (1 + eps))
            down = _lm_loss_terms(model, batch)
            _scale_head(model, layer, head, 1 / (1 - eps))
            scores[layer, head] = ((up - down) / (2 * eps)).abs().sum()  # per example, then summed
    return scores


# llama's RMSNorm computes in float32 even in a float64 model, which limits the finite difference to ~1e-3
@pytest.mark.parametrize("model_type,rtol", [("bert", 1e-4), ("gpt2", 1e-4), ("llama", 5e-3)])
def test_importance_matches_finite_difference(model_type, rtol):
    model = tiny_model(model_type).double()
    batches = [tiny_batch(seed=1), tiny_batch(seed=2)]
    reference = torch.stack([_finite_difference(model, b) for b in batches]).mean(0)
    scores = head_importance(model, batches, normalize=False, progress=False)
    assert scores.shape == reference.shape
    torch.testing.assert_close(scores.double(), reference, rtol=rtol, atol=rtol * 1e-3)
    normalized = head_importance(model, batches, progress=False)
    torch.testing.assert_close(normalized.double(), reference / reference.norm(dim=1, keepdim=True),
                               rtol=rtol, atol=rtol * 1e-2)


def test_importance_leaves_weights_grads_and_mode_alone():
    model = tiny_model("llama").train()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    before = {n: (p.detach().clone(), p.grad.clone()) for n, p in model.named_parameters()}
    head_importance(model, [tiny_batch()], progress=False)
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name][0]) and torch.equal(p.grad, before[name][1]), name
    o = arch.get_submodule(arch.get_layers(model)[0], arch.get_arch(model).o)
    assert not o._forward_pre_hooks


def test_importance_of_a_model_without_lm_head_needs_a_loss():
    model = tiny_model("bert", "base")
    with pytest.raises(SurgeryError, match="loss_fn"):
        head_importance(model, [tiny_batch()], progress=False)
    scores = head_importance(model, [tiny_batch()], progress=False,
                             loss_fn=lambda m, b: m(**b).last_hidden_state.pow(2).mean())
    assert scores.shape == (4, 4) and (scores > 0).all()


def test_select_uniform_takes_lowest_per_layer():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0], [0.1, 0.2, 0.3, 0.4]])
    assert select_heads(scores, 0.5) == {0: [1, 3], 1: [0, 1]}
    assert select_heads(scores, 0.0) == {}


def test_select_global_keeps_one_head_per_layer():
    scores = torch.tensor([[0.1, 0.2, 0.3, 0.4], [5.0, 6.0, 7.0, 8.0]])
    plan = select_heads(scores, 0.5, uniform=False)
    assert plan == {0: [0, 1, 2], 1: [0]}  # the 4 lowest would be all of layer 0: its best head stays


def test_select_gqa_per_group_and_whole_groups():
    scores = torch.tensor([[9.0, 1.0, 2.0, 8.0, 7.0, 0.5]])  # 6 heads, 2 KV groups of 3
    assert select_heads(scores, 0.34, group_size=3) == {0: [1, 5]}  # one per group
    assert select_heads(scores, 0.5, group_size=3, whole_groups=True) == {0: [0, 1, 2]}  # sums 12 < 15.5


@pytest.mark.parametrize("kwargs", [dict(fraction=1.0), dict(fraction=-0.1), dict(fraction=0.95),
                                    dict(fraction=0.3, group_size=4), dict(fraction=0.8, group_size=2)])
def test_select_rejects_bad_input(kwargs):
    with pytest.raises(HfCompressError):
        select_heads(torch.rand(2, 6), **kwargs)
    with pytest.raises(SurgeryError, match="finite"):
        select_heads(torch.tensor([[float("nan"), 1.0]]), 0.5)


def test_config_validates():
    with pytest.raises(SurgeryError, match="`fraction` must be"):
        HeadPruningConfig(fraction=1.5)
    with pytest.raises(SurgeryError, match="`export` must be"):
        HeadPruningConfig(export="zip")

