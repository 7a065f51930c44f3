"""Recipe schema: strict keys with paths and suggestions, types, stage order, --set overrides."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hf_compress.errors import RecipeError
from hf_compress.distillation.stage import DistillConfig
from hf_compress.methods.heads.config import PruneHeadsConfig
from hf_compress.methods.int8.config import QuantizeInt8Config
from hf_compress.recipe.schema import apply_overrides, load_recipe, parse_recipe

BASE = {
    "version": 1,
    "model": "minilm",
    "task": "feature-extraction",
    "output_dir": "out/x",
    "data": {"name": "wiki-summaries", "max_samples": 100},
    "stages": [
        {"student_from_teacher": {"num_layers": 3}},
        {"distill": {"alpha_hidden": 1.0, "max_steps": 10}},
        {"prune_heads": {"fraction": 0.25}},
        {"quantize_int8": {"mode": "w8a8", "ignore": ["lm_head"]}},
    ],
    "evaluate": ["size", "latency", "teacher_agreement"],
}


def _error(raw) -> str:
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    return str(info.value)


def test_valid_recipe_builds_typed_stages_and_round_trips():
    recipe = parse_recipe(BASE)
    assert [s.name for s in recipe.stages] == [
        "student_from_teacher",
        "distill",
        "prune_heads",
        "quantize_int8",
    ]
    assert isinstance(recipe.stages[1].config, DistillConfig) and recipe.stages[1].config.max_steps == 10
    assert isinstance(recipe.stages[2].config, PruneHeadsConfig) and recipe.stages[2].config.fraction == 0.25
    assert isinstance(recipe.stages[3].config, QuantizeInt8Config)
    # the resolved recipe (what is saved in the output folder) parses back to the same recipe
    again = parse_recipe(yaml.safe_load(recipe.to_yaml()))
    assert again.to_dict() == recipe.to_dict()


def test_unknown_nested_key_names_its_path_and_the_closest_key():
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"]["max_step"] = 5
    msg = _error(raw)
    assert msg.startswith("stages[1].distill.max_step:") and "did you mean `max_steps`" in msg


@pytest.mark.parametrize(
    "stages, fragment",
    [
        ([{"quantize_int8": {}}, {"distill": {"alpha_hidden": 1.0}}], "nothing may follow quantize_int8"),
        (
            [{"quantize_int8": {}}, {"prune_heads": {}}],
            "stages[1].prune_heads: nothing may follow quantize_int8",
        ),
        ([{"prune_heads": {}}, {"student_from_teacher": {"num_layers": 2}}], "must be the first stage"),
        ([{"distill": {"alpha_hidden": 1.0}}], "distill needs a smaller student"),
    ],
)
def test_impossible_stage_orders_are_refused(stages, fragment):
    assert fragment in _error({**BASE, "stages": stages})


def test_stage_config_post_init_errors_carry_the_stage_path():
    raw = copy.deepcopy(BASE)
    raw["stages"][2]["prune_heads"]["fraction"] = 1.5
    assert _error(raw) == "stages[2].prune_heads: `fraction` must be a number in [0, 1), got 1.5"


def test_types_are_checked_and_int_is_accepted_for_float():
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"]["learning_rate"] = 1  # int where float is declared: fine
    assert parse_recipe(raw).stages[1].config.learning_rate == 1
    raw["stages"][1]["distill"]["max_steps"] = 2.5
    assert "stages[1].distill.max_steps: must be int, got float 2.5" in _error(raw)
    raw["stages"][1]["distill"]["max_steps"] = True  # bool is not an int here
    assert "must be int, got bool" in _error(raw)


def test_overrides_index_lists_parse_yaml_values_and_apply_before_validation():
    raw = apply_overrides(
        BASE,
        [
            "stages.1.distill.max_steps=7",
            "data.max_samples=null",
            "evaluate=[size]",
            "stages.3.quantize_int8.mode=w8a16",
        ],
    )
    recipe = parse_recipe(raw)
    assert recipe.stages[1].config.max_steps == 7
    assert recipe.data.max_samples is None and recipe.evaluate == ["size"]
    assert recipe.stages[3].config.mode == "w8a16"
    assert BASE["stages"][1]["distill"]["max_steps"] == 10  # the input is not modified


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("stages.9.distill.max_steps=3", "not an index of a list of 4 items"),
        ("output_dir.x=3", "is a value, not a mapping"),
        ("max_steps", "expects KEY=VALUE"),
    ],
)
def test_bad_overrides(override, fragment):
    with pytest.raises(RecipeError, match="--set"):
        apply_overrides(BASE, [override])
    with pytest.raises(RecipeError) as info:
        apply_overrides(BASE, [override])
    assert fragment in str(info.value)


def test_feature_extraction_distillation_needs_hidden_states_not_logits():
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"] = {"alpha_logits": 1.0, "alpha_hidden": 1.0}
    assert "has no logits" in _error(raw)
    raw["stages"][1]["distill"] = {"max_steps": 3}
    assert "alpha_hidden" in _error(raw)


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path):
    (tmp_path / "texts.txt").write_text("one\ntwo\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({**BASE, "data": {"name": "texts.txt"}, "stages": []}))
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.data.name == str(tmp_path / "texts.txt")


def test_model_may_be_a_config_mapping_but_needs_a_model_type():
    recipe = parse_recipe(
        {**BASE, "model": {"config": {"model_type": "bert", "hidden_size": 32}}, "stages": []}
    )
    assert recipe.model.config["model_type"] == "bert" and recipe.model.name_or_path is None
    assert "model_type" in _error({**BASE, "model": {"config": {"hidden_size": 32}}, "stages": []})


RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_shipped_recipes_are_valid(path):
    recipe = load_recipe(path)
    assert recipe.stages and recipe.output_dir.startswith("out/")
