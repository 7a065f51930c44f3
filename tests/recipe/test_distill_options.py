"""The recipe's distill stage refuses exactly what DistillationArguments refuses, with the same message, and
names the key path of the bad field."""

from __future__ import annotations

import copy

import pytest

from hf_compress import DistillationArguments, HfCompressError
from hf_compress.errors import RecipeError
from hf_compress.recipe.schema import parse_recipe

BASE = {
    "model": "minilm",
    "task": "causal-lm",
    "output_dir": "out/x",
    "data": {"name": "wiki-summaries"},
    "stages": [{"student_from_teacher": {"num_layers": 2}}, {"distill": {"alpha_hidden": 1.0}}],
}
BAD = [
    ("temperature", -1), ("temperature", 0.0), ("alpha_hidden", -0.5), ("alpha_task", -1),
    ("alpha_logits", -2.0), ("logit_loss", "kl"), ("jsd_beta", 1.0), ("hidden_loss", "l1"),
    ("layer_map", "every-other"), ("layer_map", [[1, -2]]), ("alpha_relation", -1.0),
    ("relation_loss", "cos"), ("relation_temperature", 0.0),
]


def _arguments_message(tmp_path, field, value) -> str:
    kwargs = {"alpha_hidden": 1.0, field: value}
    with pytest.raises(HfCompressError) as info:
        DistillationArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("field,value", BAD, ids=[f"{f}={v!r}" for f, v in BAD])
def test_recipe_names_the_path_and_says_what_distillation_arguments_says(tmp_path, field, value):
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"][field] = value
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    assert str(info.value) == f"stages[1].distill.{field}: {_arguments_message(tmp_path, field, value)}"


def test_all_weights_zero_is_refused_by_both_with_one_message(tmp_path):
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"] = {"alpha_logits": 0.0, "alpha_hidden": 0.0}
    with pytest.raises(RecipeError) as info:
        parse_recipe(raw)
    with pytest.raises(HfCompressError) as args_info:
        DistillationArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, alpha_logits=0.0)
    assert "at least one of" in str(args_info.value)
    assert str(info.value) == f"stages[1].distill: {args_info.value}"


def test_an_unset_alpha_logits_is_chosen_by_the_task_not_refused():
    raw = copy.deepcopy(BASE)
    raw["stages"][1]["distill"] = {"max_steps": 3}
    assert parse_recipe(raw).stages[1].config.alpha_logits is None


def test_the_shared_check_refuses_infinite_values():
    from hf_compress.distillation.options import check_options

    good = {"temperature": 2.0, "alpha_logits": 1.0, "alpha_hidden": 0.0, "alpha_task": 0.0,
            "logit_loss": "forward_kl", "jsd_beta": 0.5, "hidden_loss": "mse", "layer_map": "uniform"}
    check_options(good)
    with pytest.raises(HfCompressError, match="`alpha_task` must be >= 0, got inf") as info:
        check_options({**good, "alpha_task": float("inf")})
    assert info.value.key == "alpha_task"
