"""``run_recipe`` applies ``overrides`` to a Recipe object exactly as to a YAML path (defect: they were
silently ignored for an object)."""

from __future__ import annotations

import pytest

from hf_compress.errors import RecipeError
from hf_compress.recipe import loading, runner
from hf_compress.recipe.schema import parse_recipe

RAW = {
    "model": {"config": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2,
                         "num_attention_heads": 4, "intermediate_size": 64}},
    "output_dir": "out/never-written",
    "stages": [{"drop_layers": {"layers": [1]}}],
    "evaluate": ["size"],
}


class _Loaded(Exception):
    """Raised by the stand-in loader: the recipe reached loading with these settings."""


@pytest.fixture
def seen(monkeypatch):
    seen = {}

    def fake_load_model(spec, task, seed=0):
        seen.update(spec=spec, task=task, seed=seed)
        raise _Loaded

    monkeypatch.setattr(loading, "load_model", fake_load_model)
    return seen


def test_overrides_reach_the_run_for_a_recipe_object(seen, tmp_path):
    recipe = parse_recipe(RAW)
    with pytest.raises(_Loaded):
        runner.run_recipe(recipe, overrides=["seed=7", "model.dtype=bfloat16", "task=fill-mask"],
                          output_dir=tmp_path / "out")
    assert (seen["seed"], seen["spec"].dtype, seen["task"]) == (7, "bfloat16", "fill-mask")
    assert recipe.seed == 0 and recipe.model.dtype == "float32"  # the caller's object is not changed


def test_a_bad_override_of_a_recipe_object_is_refused_before_loading(seen):
    with pytest.raises(RecipeError, match="stages\\[0\\].drop_layers.*layers"):
        runner.run_recipe(parse_recipe(RAW), overrides=["stages.0.drop_layers.layers=null"])
    with pytest.raises(RecipeError, match="--set"):
        runner.run_recipe(parse_recipe(RAW), overrides=["stages.5.drop_layers.layers=[0]"])
    assert seen == {}


def test_overrides_of_a_path_still_apply(seen, tmp_path):
    import yaml

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(RAW))
    with pytest.raises(_Loaded):
        runner.run_recipe(path, overrides=["seed=3"])
    assert seen["seed"] == 3
