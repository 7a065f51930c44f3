"""Property-based tests (hypothesis) of prune_width over its input space: any amounts, rounding and family
give either one hf_compress error with the model untouched, or a model whose config matches its weights and
which computes exactly what the unpruned model computes with the removed neurons zeroed and the removed
channels left out (the references of tests/width_fixtures.py). Bounded by example counts, no timings."""

import copy

import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tiny_models import tiny_batch, tiny_model

from hf_compress import arch, prune_width
from hf_compress.errors import HfCompressError
from width_fixtures import kept_channel_reference, logits_of, random_scores, zero_neurons_reference

FAMILIES = ["llama", "gpt2", "bert", "qwen2", "phi3", "gemma"]
HIDDEN_FAMILIES = [f for f in FAMILIES if arch.ARCHITECTURES[f].head_dim_key]  # BERT/GPT-2 refuse hidden
valid = st.one_of(st.none(), st.floats(0.05, 0.95), st.sampled_from([8, 16, 24, 32]))
anything = st.one_of(st.none(), st.floats(-0.5, 1.5), st.integers(-4, 200),
                     st.sampled_from([0.0, 0.25, 0.99, 1.0, float("nan"), float("inf"), True, "0.5", [8]]))
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _weights_width(model, which):
    """Widths read from the weights themselves (not the config): the MLP output projection's input, the
    input embedding's columns."""
    if which == "ffn":
        out = arch.get_submodule(arch.get_layers(model)[0], arch.get_arch(model).mlp_out)
        return out.weight.shape[0] if type(out).__name__ == "Conv1D" else out.weight.shape[1]
    return model.get_input_embeddings().weight.shape[1]


def _prune_and_check(family, ffn, hidden, round_to, seed):
    """Prune a fresh tiny model; on a refusal check it is one line and the model is untouched and return
    False; otherwise check config == weights, the size rules, and exactness against the references."""
    torch.manual_seed(seed)
    model, batch = tiny_model(family), tiny_batch()
    scores = random_scores(model, seed)
    before, state, config = copy.deepcopy(model), copy.deepcopy(model.state_dict()), model.config.to_dict()
    old_ffn, old_hidden = arch.intermediate_size(model), arch.hidden_size(model)
    try:
        prune_width(model, ffn=ffn, hidden=hidden, scores=scores, round_to=round_to)
    except HfCompressError as err:
        event("refused")
        assert "\n" not in str(err)
        assert model.config.to_dict() == config
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        return False
    new_ffn, new_hidden = arch.intermediate_size(model), arch.hidden_size(model)
    event(f"pruned ffn={new_ffn != old_ffn} hidden={new_hidden != old_hidden}")
    # the config describes the weights, sizes only shrink, never to zero, and land on the grid unless unchanged
    assert new_ffn == _weights_width(model, "ffn")
    written = getattr(model.config, arch.get_arch(model).intermediate_size_key)  # GPT-2's n_inner may stay None
    assert written == new_ffn or (written is None and new_ffn == old_ffn)
    assert new_hidden == _weights_width(model, "hidden")
    for new, old, amount in ((new_ffn, old_ffn, ffn), (new_hidden, old_hidden, hidden)):
        assert 1 <= new <= old
        assert new == old or new % round_to == 0
        if isinstance(amount, int) and not isinstance(amount, bool):
            assert new == amount
    # what it computes: the unpruned model with the unkept neurons zeroed and only the kept channels
    reference = before
    if new_ffn != old_ffn:
        zero_neurons_reference(reference, scores.ffn.topk(new_ffn, dim=1).indices)
    if new_hidden != old_hidden:
        reference = kept_channel_reference(reference, scores.hidden.topk(new_hidden).indices.sort().values)
    torch.testing.assert_close(logits_of(model, batch), logits_of(reference, batch), atol=1e-5, rtol=1e-5)
    return True


@SETTINGS
@given(data=st.data(), ffn=valid, hidden=valid, round_to=st.sampled_from([1, 2, 4, 8]), seed=st.integers(0, 3))
def test_every_valid_request_prunes_exactly(data, ffn, hidden, round_to, seed):
    family = data.draw(st.sampled_from(HIDDEN_FAMILIES if hidden is not None else FAMILIES), label="family")
    assert _prune_and_check(family, ffn, hidden, round_to, seed)


@SETTINGS
@given(family=st.sampled_from(FAMILIES), ffn=anything, hidden=anything,
       round_to=st.sampled_from([1, 2, 4, 8, 16, 0, -1]), seed=st.integers(0, 3))
def test_any_request_prunes_exactly_or_refuses_leaving_the_model_untouched(family, ffn, hidden, round_to, seed):
    _prune_and_check(family, ffn, hidden, round_to, seed)
