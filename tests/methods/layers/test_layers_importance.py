"""layer_importance against naive per-token references; select_layers."""

import math

import pytest
import torch
from tiny_models import tiny_batch, tiny_model

from hf_compress import SurgeryError, arch, layer_importance, select_layers


def naive_mean(pairs, fn):
    """Mean of fn(cos) over every valid token, one token at a time, in float64."""
    total, count = 0.0, 0
    for a, b, mask in pairs:
        for i in range(a.shape[0]):
            for t in range(a.shape[1]):
                if mask[i, t]:
                    x, y = a[i, t].double(), b[i, t].double()
                    total += fn(float(x @ y / (x.norm() * y.norm())))
                    count += 1
    return total / count


def hidden_states(model, batch):
    with torch.no_grad():
        return model(**batch, output_hidden_states=True).hidden_states


@pytest.mark.parametrize(
    "method, n, fn",
    [
        ("block_influence", 1, lambda c: 1.0 - c),
        ("angular", 1, lambda c: math.acos(max(-1.0, min(1.0, c))) / math.pi),
        ("angular", 2, lambda c: math.acos(max(-1.0, min(1.0, c))) / math.pi),
    ],
)
def test_scores_match_a_per_token_reference(method, n, fn):
    # BERT has no final norm, so hidden_states[l] is exactly the input of layer l (and [L] the last output)
    model = tiny_model("bert", "base")
    batches = [tiny_batch(seed=0), tiny_batch(seed=1, seq_len=9)]
    scores = layer_importance(model, batches, method=method, n=n)
    states = [hidden_states(model, b) for b in batches]
    total = arch.num_layers(model)
    assert len(scores) == total - n + 1
    for start, score in enumerate(scores):
        pairs = [(h[start], h[start + n], b["attention_mask"]) for h, b in zip(states, batches)]
        assert score == pytest.approx(naive_mean(pairs, fn), abs=1e-9), start


def test_padding_is_excluded():
    model = tiny_model("llama")
    batch = tiny_batch(batch_size=2, seq_len=12)  # sample 1 is right-padded after 6 tokens
    padded = layer_importance(model, [batch])
    lengths = batch["attention_mask"].sum(1).tolist()
    alone = [{k: v[i : i + 1, : lengths[i]] for k, v in batch.items()} for i in (0, 1)]
    parts = [layer_importance(model, [b]) for b in alone]
    weights = [12, 6]  # valid tokens per sample
    expected = [(parts[0][l] * weights[0] + parts[1][l] * weights[1]) / 18 for l in range(len(padded))]
    assert padded == pytest.approx(expected, abs=1e-6)


def test_hooks_see_the_last_layer_before_the_final_norm():
    model = tiny_model("llama")
    batch = tiny_batch(padded=False)
    scores = layer_importance(model, [batch])
    h = hidden_states(model, batch)
    mask = batch["attention_mask"]
    layers = arch.get_layers(model)
    outputs = {}
    handle = layers[-1].register_forward_hook(lambda m, a, o: outputs.setdefault("last", o))
    with torch.no_grad():
        model(**batch)
    handle.remove()
    last = outputs["last"][0] if isinstance(outputs["last"], tuple) else outputs["last"]
    assert not torch.allclose(h[-1], last)  # output_hidden_states' last entry is after the final norm
    assert scores[-1] == pytest.approx(naive_mean([(h[-2], last, mask)], lambda c: 1 - c), abs=1e-9)
    assert scores[0] == pytest.approx(naive_mean([(h[0], h[1], mask)], lambda c: 1 - c), abs=1e-9)


def test_identity_layer_scores_zero_and_is_selected():
    model = tiny_model("gpt2")
    layers = arch.get_layers(model)
    handle = layers[2].register_forward_hook(
        lambda m, args, out: (args[0],) + tuple(out[1:]) if isinstance(out, tuple) else args[0]
    )
    scores = layer_importance(model, [tiny_batch()])
    handle.remove()
    assert scores[2] == pytest.approx(0.0, abs=1e-6)
    assert min(scores[:2] + scores[3:]) > 1e-4
    assert select_layers(scores, 1) == [2]
    assert model.training is False


def test_select_layers():
    scores = [0.5, 0.1, 0.3, 0.2, 0.9]
    assert select_layers(scores, 2) == [1, 3]
    assert select_layers(scores, 2, contiguous=True) == [1, 2]  # window sums 0.6, 0.4, 0.5, 1.1
    assert select_layers(scores, 3, contiguous=True) == [1, 2, 3]
    assert select_layers([0.3, 0.2, 0.4], 2, contiguous=True, block=2) == [1, 2]  # 4 layers, blocks of 2


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([0.1, 0.2], 2), {}, r"\[1, 1\].*got 2"),
        (([0.1, 0.2], 0), {}, "got 0"),
        (([0.1, float("nan")], 1), {}, "NaN"),
        (([], 1), {}, "non-empty"),
        (([0.1, 0.2, 0.3], 2), {"block": 2}, "block"),
    ],
)
def test_select_layers_bad_input(args, kwargs, match):
    with pytest.raises(SurgeryError, match=match):
        select_layers(*args, **kwargs)


def test_layer_importance_bad_input():
    model = tiny_model("llama")
    with pytest.raises(SurgeryError, match="method.*got 'cosine'"):
        layer_importance(model, [tiny_batch()], method="cosine")
    with pytest.raises(SurgeryError, match=r"\[1, 3\].*got 4"):
        layer_importance(model, [tiny_batch()], n=4)
    with pytest.raises(SurgeryError, match="no valid tokens"):
        layer_importance(model, [])
    assert not any(layer._forward_hooks for layer in arch.get_layers(model))
