"""width_importance against a naive per-token float64 computation; padding changes nothing."""

import pytest
import torch
from tiny_models import ENCODER_TYPES, tiny_batch, tiny_model

from hf_compress import arch, width_importance
from hf_compress.errors import SurgeryError


def _naive(model, batches):
    """Capture every activation with plain hooks, then average |x| token by token in float64 over the valid
    tokens."""
    spec, layers = arch.get_arch(model), arch.get_layers(model)
    readers = [arch.get_submodule(layer, p) for layer in layers for p in (spec.qkv or spec.q, spec.mlp_in[0])]
    seen = {"ffn": [[] for _ in layers], "norm": [[] for _ in readers]}
    handles = [arch.get_submodule(layer, spec.mlp_out).register_forward_pre_hook(
        lambda m, a, i=i: seen["ffn"][i].append(a[0].detach())) for i, layer in enumerate(layers)]
    # the outputs of the norms feeding attention and the MLP = what their first projections read
    handles += [module.register_forward_pre_hook(lambda m, a, j=j: seen["norm"][j].append(a[0].detach()))
                for j, module in enumerate(readers)]
    masks = []
    with torch.no_grad():
        for batch in batches:
            model(**batch, **({} if model.config.model_type in ENCODER_TYPES else {"use_cache": False}))
            masks.append(batch["attention_mask"])
    for h in handles:
        h.remove()

    def mean_abs(captured):
        total, count = 0, 0
        for x, mask in zip(captured, masks):
            for b in range(x.shape[0]):
                for t in range(x.shape[1]):
                    if mask[b, t]:
                        total = total + x[b, t].double().abs()
                        count += 1
        return total / count

    ffn = torch.stack([mean_abs(c) for c in seen["ffn"]])
    hidden = sum(mean_abs(c) for c in seen["norm"])
    return ffn, hidden


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "gpt2", "llama", "phi", "phi3", "gemma2"])
def test_scores_match_a_naive_float64_per_token_mean(model_type):
    model = tiny_model(model_type)
    batches = [tiny_batch(seed=0), tiny_batch(batch_size=3, seq_len=7, seed=1)]
    scores = width_importance(model, batches, progress=False)
    ffn, hidden = _naive(model, batches)
    assert scores.ffn.dtype == torch.float64 and scores.ffn.shape == (4, arch.intermediate_size(model))
    torch.testing.assert_close(scores.ffn, ffn, rtol=1e-10, atol=0)
    torch.testing.assert_close(scores.hidden, hidden, rtol=1e-10, atol=0)


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama"])
def test_padding_does_not_change_the_scores(model_type):
    model = tiny_model(model_type)
    padded = tiny_batch(batch_size=2, seq_len=12)  # the second row is half padding
    rows = [{k: v[i:i + 1, : int(padded["attention_mask"][i].sum())] for k, v in padded.items()} for i in range(2)]
    a = width_importance(model, [padded], progress=False)
    b = width_importance(model, rows, progress=False)
    torch.testing.assert_close(a.ffn, b.ffn, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(a.hidden, b.hidden, rtol=1e-5, atol=1e-7)
    garbage = dict(padded, input_ids=padded["input_ids"].masked_fill(padded["attention_mask"] == 0, 77))
    torch.testing.assert_close(width_importance(model, [garbage], progress=False).ffn, a.ffn, rtol=1e-5, atol=1e-7)


def test_no_valid_tokens_is_an_error_and_mode_is_restored():
    model = tiny_model("llama").train()
    batch = tiny_batch()
    batch["attention_mask"][:] = 0
    with pytest.raises(SurgeryError, match="no valid tokens"):
        width_importance(model, [batch], progress=False)
    assert model.training
