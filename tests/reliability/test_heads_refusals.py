"""Issue 15 item 4 (prune_heads on an int8 model is refused before anything changes) and item 21's head
part (plans with True, 1.0 or repeated heads are refused, as drop_layers refuses such layer lists)."""

from __future__ import annotations

import copy

import pytest
import torch

from hf_compress import prune_heads, quantize_int8
from hf_compress.errors import SurgeryError
from tiny_models import tiny_batch, tiny_model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("model_type, plan, kwargs", [
    ("bert", {0: [1]}, {}),
    ("llama", {0: [0, 1], 1: [0, 1], 2: [0, 1], 3: [0, 1]}, {}),  # whole KV groups
    ("gpt2", {1: [2]}, {"mode": "w8a16"}),
])
@pytest.mark.parametrize("export", ["physical", "masked"])
def test_prune_heads_on_an_int8_model_is_refused_and_changes_nothing(model_type, plan, kwargs, export):
    model = quantize_int8(tiny_model(model_type), **kwargs)
    before, config = _state(model), copy.deepcopy(model.config.to_dict())
    with pytest.raises(SurgeryError, match="int8"):
        prune_heads(model, plan, export=export)
    after = _state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert model.config.to_dict() == config
    model(**tiny_batch())  # still runs


@pytest.mark.parametrize("plan, problem", [
    ({0: [True]}, "True"), ({0: [1.0]}, "1.0"), ({0: [1, 1]}, "repeats"), ({True: [1]}, "True"),
    ({0: 1}, "list"),
])
def test_plans_with_bools_floats_or_repeats_are_refused(plan, problem):
    model = tiny_model("bert")
    with pytest.raises(SurgeryError, match=problem):
        prune_heads(model, plan)


def test_sparsify_cannot_make_a_sparser_model_denser():
    from hf_compress import sparsify

    model = sparsify(tiny_model("llama"), 0.5)
    with pytest.raises(SurgeryError, match="already 50"):
        sparsify(model, 0.2)
    sparsify(tiny_model("llama"), 0.2)  # and the other way round is a normal second pass
