"""The cost model sizes every candidate exactly without quantizing or calibrating anything: its parameter
count and bytes equal those of the model its stages rebuild from the real weights (importance surgery,
int8 with calibration), on tiny BERT, GPT-2 and Llama, for every int8 mode. A float fallback's bytes are a
range until the planner builds the candidate; then they are exact."""

from __future__ import annotations

import copy

import pytest
from planner_helpers import texts
from tiny_models import tiny_model

from hf_compress.core import registry
from hf_compress.core.context import StageContext
from hf_compress.errors import QuantizationError
from hf_compress.evaluation import model_bytes, param_count
from hf_compress.planner.cost import CostModel, run_stages
from hf_compress.planner.space import INT8_MODES, Candidate
from hf_compress.recipe.loading import char_tokenizer

TOK = char_tokenizer()
FAMILIES = {"bert": "feature-extraction", "gpt2": "causal-lm", "llama": "causal-lm"}
STRUCTURES = [(4, 0.0, 0.0), (2, 0.0, 0.0), (3, 0.5, 0.0), (2, 0.0, 0.5), (2, 0.5, 0.25)]


def context(family: str) -> StageContext:
    model = tiny_model(family, "base" if FAMILIES[family] == "feature-extraction" else "causal-lm")
    return StageContext(model=copy.deepcopy(model), teacher=model, tokenizer=TOK, texts=texts(), task=FAMILIES[family],
                        max_length=32)


def rebuilt(family: str, cand: Candidate):
    """The candidate's stages on the real weights: importance surgery, then int8 (calibrated fallback)."""
    ctx = context(family)
    stages = cand.structural_stages(4)
    run_stages(ctx, stages + ([cand.int8_stage(compile=False)] if cand.int8 else []))
    return ctx.model


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_cost(request):
    ctx = context(request.param)
    return request.param, CostModel(ctx, 4, ctx.batches(1)[0], latency_fn=lambda m, i: {k: 1.0 for k in m})


@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: "L{}-h{}-f{}".format(*s))
def test_predicted_size_is_that_of_the_rebuilt_model_for_every_int8_mode(family_cost, structure):
    family, cost = family_cost
    for mode in INT8_MODES:
        cand = Candidate(*structure, int8=mode)
        if mode == "w8a8-sq" and family == "bert":  # SmoothQuant needs a pre-norm model: both refuse it
            with pytest.raises(QuantizationError, match="smoothquant supports the pre-norm"):
                rebuilt(family, cand)
            with pytest.raises(QuantizationError, match="smoothquant supports the pre-norm"):
                cost.size(cand)
            continue
        size, model = cost.size(cand), rebuilt(family, cand)
        assert size["params"] == param_count(model), cand.key
        if mode == "w8a8-fb" and "bytes_low" in size:  # the layers left float are chosen on real calibration
            assert size["bytes_exact"] is False and size["bytes_low"] <= model_bytes(model) <= size["bytes"]
        else:  # (a fallback among projections all of one size is exact too)
            assert size["bytes"] == model_bytes(model) and "bytes_low" not in size, cand.key
        assert size["mib"] == size["bytes"] / 2**20


def test_sizing_quantizes_nothing_and_builds_each_float_shape_once(monkeypatch):
    table = registry.methods()

    def refuse(ctx, cfg):
        raise AssertionError("sizing ran the int8 stage (quantization or calibration)")

    monkeypatch.setitem(registry._METHODS, "quantize_int8", registry.MethodSpec(
        **{**table["quantize_int8"].__dict__, "handler": refuse}))
    ctx = context("llama")
    cost = CostModel(ctx, 4, ctx.batches(1)[0], latency_fn=lambda m, i: {k: 1.0 for k in m})
    for mode in INT8_MODES:
        cost.size(Candidate(2, 0.5, 0.25, mode))
    assert cost.shapes.runs == 3  # drop, width, heads: once for the five int8 modes
    cost.size(Candidate(2, 0.5, 0.0))
    assert cost.shapes.runs == 4  # the dropped-layers prefix is shared: only the heads stage runs


def test_the_int8_byte_rule_refuses_a_fallback_of_every_layer():
    from hf_compress.planner.cost import stage_config

    model = tiny_model("bert", "base")
    rule = registry.get_method("quantize_int8").predict_size
    n = 6 * 4 + 1  # q, k, v, attention output, intermediate, output per layer, and the pooler
    assert rule(model, stage_config("quantize_int8", {"mode": "w8a8", "float_fallback": n - 1}))[0] == 0
    with pytest.raises(QuantizationError, match="`float_fallback` must be less than the 25 layers"):
        rule(model, stage_config("quantize_int8", {"mode": "w8a8", "float_fallback": n}))
