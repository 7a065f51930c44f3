"""prune_width: FFN pruning equals zeroing neurons (every family); hidden pruning equals a kept-channel
reference; sizes, rounding, parameter counts; bad input leaves the model unchanged."""

import copy

import pytest
import torch
from tiny_models import ALL_MODEL_TYPES, tiny_batch, tiny_model

from hf_compress import WidthPruningConfig, arch, prune_width, width_importance
from hf_compress.errors import HfCompressError, SurgeryError, UnsupportedArchitectureError
from hf_compress.methods.width.importance import WidthScores
from width_fixtures import kept_channel_reference, logits_of, random_scores, zero_neurons_reference

HIDDEN_TYPES = tuple(t for t in ALL_MODEL_TYPES if arch.ARCHITECTURES[t].head_dim_key)


@pytest.mark.parametrize("model_type", ALL_MODEL_TYPES)
def test_ffn_pruning_equals_zeroed_neurons(model_type):
    model, batch = tiny_model(model_type), tiny_batch()
    scores = random_scores(model)
    width = arch.intermediate_size(model)
    keep = scores.ffn.topk(width - 16, dim=1).indices
    handles = zero_neurons_reference(model, keep)
    expected = logits_of(model, batch)
    for h in handles:
        h.remove()
    n_in = len(arch.get_arch(model).mlp_in)
    before = sum(p.numel() for p in model.parameters())
    prune_width(model, ffn=width - 16, scores=scores)
    torch.testing.assert_close(logits_of(model, batch), expected, atol=1e-5, rtol=0)
    assert arch.intermediate_size(model) == width - 16
    assert getattr(model.config, arch.get_arch(model).intermediate_size_key) == width - 16
    # every removed neuron takes its rows (weight + bias) of each MLP input and its column of the output
    hidden, bias = arch.hidden_size(model), int(arch.get_submodule(
        arch.get_layers(model)[0], arch.get_arch(model).mlp_in[0]).bias is not None)
    per_neuron = (n_in if model_type != "phi3" else 2) * (hidden + bias) + hidden
    assert before - sum(p.numel() for p in model.parameters()) == arch.num_layers(model) * 16 * per_neuron


@pytest.mark.parametrize("model_type", HIDDEN_TYPES)
@pytest.mark.parametrize("tied", [True, False])
def test_hidden_pruning_equalskept_channel_reference(model_type, tied):
    model, batch = tiny_model(model_type, tie_word_embeddings=tied), tiny_batch()
    scores = random_scores(model)
    keep = scores.hidden.topk(24).indices.sort().values
    expected = logits_of(kept_channel_reference(model, keep), batch)
    head_size, vocab = arch.head_dim(model), model.config.vocab_size
    prune_width(model, hidden=24, scores=scores)
    torch.testing.assert_close(logits_of(model, batch), expected, atol=1e-5, rtol=1e-5)
    assert arch.hidden_size(model) == 24 and model.config.head_dim == head_size
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tied
    scale = getattr(model.get_input_embeddings(), "embed_scale", None)  # Gemma: a reload computes sqrt(24)
    assert scale is None or scale.item() == pytest.approx(24**0.5)


def test_llama_parameter_count_matches_the_config_formula():
    model = tiny_model("llama", tie_word_embeddings=False)
    prune_width(model, ffn=0.25, hidden=0.25, scores=random_scores(model))
    c = model.config
    h, i, d, v = c.hidden_size, c.intermediate_size, c.head_dim, c.vocab_size
    attn = h * d * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
    expected = 2 * v * h + c.num_hidden_layers * (attn + 3 * h * i + 2 * h) + h
    assert (h, i) == (24, 48) and sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("amount,current,expected", [(0.25, 64, 48), (0.99, 64, 8), (0.1, 64, 56),
                                                     (0.0, 64, 64), (0.5, 30, 16), (40, 64, 40)])
def test_sizes_round_to_a_multiple_and_never_to_zero(amount, current, expected):
    from hf_compress.methods.width.config import target_size

    assert target_size("ffn", amount, current, 8) == expected


BAD = [
    (dict(ffn=1.0), "`ffn` as a fraction to remove must be in [0, 1)"),
    (dict(ffn=-0.1), "must be in [0, 1)"),
    (dict(hidden=float("nan")), "must be in [0, 1)"),
    (dict(ffn=True), "`ffn` must be a fraction in [0, 1) or a size"),
    (dict(ffn=0), "`ffn` as a size must be an int >= 1"),
    (dict(ffn=128), "`ffn` must be at most the current size 64, got 128"),
    (dict(ffn=60), "`ffn` must be a multiple of round_to=8, got 60"),
    (dict(ffn=0.25, round_to=0), "`round_to` must be an int >= 1"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_input_is_one_line_and_leaves_the_model_unchanged(kwargs, message):
    model = tiny_model("llama")
    state, config = copy.deepcopy(model.state_dict()), model.config.to_dict()
    with pytest.raises(SurgeryError) as info:
        prune_width(model, scores=random_scores(model), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert model.config.to_dict() == config
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


@pytest.mark.parametrize("model_type", ["bert", "roberta", "distilbert", "gpt2"])
def test_hidden_pruning_of_families_without_head_dim_is_refused(model_type):
    model = tiny_model(model_type)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(SurgeryError, match="hidden-channel pruning of .* is refused: .* prune `ffn`"):
        prune_width(model, ffn=0.25, hidden=0.25, scores=random_scores(model))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())  # the FFN was not cut either


def test_unsupported_family_and_missing_or_bad_scores():
    class Other(torch.nn.Module):
        config = type("C", (), {"model_type": "t5"})()

    with pytest.raises(UnsupportedArchitectureError, match="'t5' is not supported"):
        prune_width(Other(), ffn=0.25)
    model = tiny_model("llama")
    with pytest.raises(SurgeryError, match="`scores` must be given"):
        prune_width(model, ffn=0.25)
    bad = random_scores(model)
    bad.ffn[0, 0] = float("nan")
    with pytest.raises(SurgeryError, match="must be finite"):
        prune_width(model, ffn=0.25, scores=bad)
    with pytest.raises(SurgeryError, match=r"shape \(4, 64\)"):
        prune_width(model, ffn=0.25, scores=WidthScores(ffn=torch.rand(3, 64), hidden=torch.rand(32)))
    with pytest.raises(HfCompressError, match="give `config` or ffn/hidden"):
        prune_width(model, ffn=0.25, config=WidthPruningConfig(ffn=0.5))
    assert arch.intermediate_size(model) == 64


def test_importance_selects_what_prune_keeps():
    model, batch = tiny_model("qwen2"), tiny_batch()
    scores = width_importance(model, [batch], progress=False)
    keep = scores.ffn[2].topk(48).indices.sort().values
    down = arch.get_submodule(arch.get_layers(model)[2], "mlp.down_proj").weight[:, keep].clone()
    prune_width(model, ffn=0.25, scores=scores)
    assert torch.equal(arch.get_submodule(arch.get_layers(model)[2], "mlp.down_proj").weight, down)


def test_a_result_the_stock_class_cannot_rebuild_is_refused_before_any_change():
    """Phi with qk_layernorm sizes its q/k norms hidden_size // heads: a narrower residual would reload
    with the wrong norm width, so it is refused (the check builds the pruned config on the meta device)."""
    model = tiny_model("phi", qk_layernorm=True)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(SurgeryError, match="would not reload: .*q_layernorm.weight"):
        prune_width(model, hidden=0.25, scores=random_scores(model))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    prune_width(model, ffn=0.25, scores=random_scores(model))  # the MLP is fine
    assert arch.intermediate_size(model) == 48


def test_hidden_sizes_the_config_refuses():
    """LlamaConfig refuses (on save) a hidden size that is not a multiple of num_attention_heads: an explicit
    size is an error naming the nearest accepted one; a fraction moves to the nearest accepted multiple."""
    model = tiny_model("llama", hidden_size=48, num_attention_heads=6, num_key_value_heads=2, head_dim=8)
    with pytest.raises(SurgeryError, match=r"`hidden` must be a size LlamaConfig accepts, got 32: .*"
                                           r"not a multiple of the number of attention heads \(6\); use 24"):
        prune_width(model, hidden=32, scores=random_scores(model))
    assert arch.hidden_size(model) == 48
    prune_width(model, hidden=0.25, scores=random_scores(model))  # 36 -> 32 (round_to 8) -> 24
    assert arch.hidden_size(model) == 24
    model.config.validate()
