"""Property-based tests (hypothesis) over the recipe schema, `--set` and the surgery APIs: whatever the input,
the answer is a validated object or one hf_compress error, never another exception, and a surgery that
refuses leaves the model exactly as it was. Bounded by example counts (no timing thresholds)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hf_compress import drop_layers, prune_heads, sparsify, student_from_teacher
from hf_compress.errors import HfCompressError, RecipeError
from hf_compress.recipe.schema import apply_overrides, parse_recipe
from tiny_models import tiny_batch, tiny_model

BASE = {"version": 1, "output_dir": "out/prop", "task": "feature-extraction",
        "model": {"config": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}},
        "stages": [{"student_from_teacher": {"num_layers": 2}}], "evaluate": ["size"], "eval_samples": 8}
KEYS = ["version", "output_dir", "task", "model", "model.config", "model.config.hidden_size", "model.dtype",
        "data", "data.name", "stages", "stages.0", "stages.0.student_from_teacher",
        "stages.0.student_from_teacher.num_layers", "evaluate", "eval_samples", "eval_max_length", "seed",
        "push_to_hub", "stages.0.prune_heads.fraction", "nope", "model.config.num_hidden_layers"]
STAGE_NAMES = ["student_from_teacher", "drop_layers", "prune_heads", "sparsify", "quantize_int8", "distill",
               "prune_width", "bogus"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["bert", "wiki-summaries", "physical", "w8a8", "2:4", "out/x", ""]),
)
plain = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS + STAGE_NAMES + ["fraction", "layers",
                                                                                       "keep", "sparsity"]),
                                                 inner, max_size=4)), max_leaves=12)
stage = st.one_of(st.sampled_from(STAGE_NAMES), st.dictionaries(st.sampled_from(STAGE_NAMES), plain, min_size=1,
                                                                max_size=1))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _parse_or_recipe_error(raw):
    try:
        recipe = parse_recipe(raw)
    except RecipeError:
        return None
    # whatever validated survives its own YAML: to_yaml -> safe_load -> the same recipe
    again = parse_recipe(yaml.safe_load(recipe.to_yaml()))
    assert again.to_dict() == recipe.to_dict()
    return recipe


@SETTINGS
@given(raw=plain)
def test_any_plain_data_is_a_recipe_or_one_recipe_error(raw):
    _parse_or_recipe_error(raw)


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(list(BASE) + ["data", "nope"]), plain, max_size=3),
       stages=st.lists(stage, max_size=4))
def test_a_valid_recipe_with_random_changes_is_a_recipe_or_one_recipe_error(changes, stages):
    raw = {**copy.deepcopy(BASE), **changes, "stages": stages}
    recipe = _parse_or_recipe_error(raw)
    if recipe is not None:
        for value in _leaves(recipe.to_dict()):
            assert not (isinstance(value, float) and not math.isfinite(value))


@SETTINGS
@given(sets=st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(
    st.sampled_from(["1", "0", "-1", ".nan", ".inf", "[1, 2]", "{a: 1}", "true", "null", "'x'", "[", "*a",
                     "1e400", "2", "0.5", "bert", "{num_layers: 2}", "&a [*a]"]),
    st.text(max_size=10))), max_size=3))
def test_set_overrides_give_a_recipe_or_one_recipe_error(sets):
    overrides = [f"{k}={v}" for k, v in sets]
    try:
        raw = apply_overrides(BASE, overrides)
    except RecipeError:
        return
    _parse_or_recipe_error(raw)


def _leaves(node):
    if isinstance(node, dict):
        for v in node.values():
            yield from _leaves(v)
    elif isinstance(node, list):
        for v in node:
            yield from _leaves(v)
    else:
        yield node


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, copy.deepcopy(model.config.to_dict())


def _unchanged(model, snap) -> bool:
    state, config = snap
    now = model.state_dict()
    return (now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)
            and model.config.to_dict() == config)


index = st.one_of(st.integers(-2, 6), st.booleans(), st.floats(-1, 5), st.just("1"))
op = st.one_of(
    st.tuples(st.just("heads"), st.dictionaries(st.integers(-1, 4), st.lists(index, max_size=4), max_size=3),
              st.sampled_from(["physical", "masked"])),
    st.tuples(st.just("drop"), st.lists(index, max_size=4)),
    st.tuples(st.just("student"), st.lists(st.integers(-1, 4), min_size=1, max_size=4)),
    st.tuples(st.just("sparsify"), st.floats(-0.5, 1.5)),
)


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(ops=st.lists(op, min_size=1, max_size=4))
def test_surgeries_in_any_order_refuse_cleanly_or_reload_to_the_same_model(model_type, ops, tmp_path_factory):
    model = tiny_model(model_type)
    for kind, *args in ops:
        snap = _snapshot(model)
        try:
            if kind == "heads":
                prune_heads(model, args[0], export=args[1])
            elif kind == "drop":
                drop_layers(model, args[0])
            elif kind == "student":
                model = student_from_teacher(model, keep=args[0]).eval()
            else:
                sparsify(model, args[0])
        except HfCompressError:
            assert _unchanged(model, snap), f"{kind}{args} refused but changed the model"
    folder = tmp_path_factory.mktemp("prop")
    model.save_pretrained(folder)
    import transformers

    auto = transformers.AutoModelForMaskedLM if model_type == "bert" else transformers.AutoModelForCausalLM
    reloaded = auto.from_pretrained(folder, trust_remote_code=True).eval()
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model.eval()(**batch).logits, atol=1e-5, rtol=1e-4)
