"""Issue 15 item 2: non-finite numbers are refused in recipes and DistillationArguments; a diverging
training run stops naming the step, and non-finite weights are never saved."""

from __future__ import annotations

import pytest
import torch

from hf_compress.distillation.args import DistillationArguments
from hf_compress.errors import CheckpointError, HfCompressError, RecipeError
from hf_compress.io.checkpoint import save_compressed
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe
from tiny_models import tiny_model

INF, NAN = float("inf"), float("nan")


@pytest.mark.parametrize(
    "key, value",
    [("learning_rate", INF), ("learning_rate", NAN), ("alpha_hidden", INF), ("weight_decay", INF),
     ("weight_decay", NAN), ("warmup_steps", NAN), ("temperature", -INF)],
)
def test_recipe_refuses_non_finite_distill_numbers(key, value, tiny_recipe):
    raw = tiny_recipe([{"student_from_teacher": {"num_layers": 2}},
                       {"distill": {"alpha_hidden": 1.0, key: value}}])
    with pytest.raises(RecipeError, match="finite"):
        parse_recipe(raw)


def test_recipe_refuses_non_finite_numbers_anywhere(tiny_recipe):
    raw = tiny_recipe([])
    raw["model"]["config"]["layer_norm_eps"] = NAN
    with pytest.raises(RecipeError, match=r"model\.config\.layer_norm_eps.*finite"):
        parse_recipe(raw)


@pytest.mark.parametrize("key", ["learning_rate", "weight_decay", "alpha_hidden", "temperature", "adam_epsilon",
                                 "max_grad_norm", "warmup_steps"])
@pytest.mark.parametrize("value", [INF, NAN])
def test_distillation_arguments_refuse_non_finite_numbers(key, value, tmp_path):
    with pytest.raises(HfCompressError, match=f"`{key}` must be a finite number"):
        DistillationArguments(output_dir=str(tmp_path), **{"alpha_logits": 1.0, key: value})


def test_diverging_distillation_stops_naming_the_step_and_writes_nothing(tiny_recipe, tmp_path):
    raw = tiny_recipe([{"student_from_teacher": {"num_layers": 2}},
                       {"distill": {"alpha_hidden": 1.0, "learning_rate": 1.0e30, "max_steps": 5,
                                    "batch_size": 4, "max_length": 16}}])
    with pytest.raises(HfCompressError, match=r"diverged at step \d+.*learning_rate"):
        run_recipe(parse_recipe(raw))
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_are_never_saved(tmp_path):
    model = tiny_model("bert")
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight[0, 0] = NAN
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.1\.output\.dense\.weight.*NaN"):
        save_compressed(model, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
