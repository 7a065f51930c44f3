"""Adding a method is one new module that registers itself: the recipe schema, the runner, the order
rules and the model card pick it up without any edit to recipe/ or io/."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import yaml

from hf_compress.core import registry
from hf_compress.errors import HfCompressError, RecipeError
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe

TOY = textwrap.dedent(
    '''
    from dataclasses import dataclass

    import torch

    from hf_compress.core.registry import MethodSpec, register
    from hf_compress.errors import RecipeError


    @dataclass
    class ScaleConfig:
        factor: float = 0.5

        def __post_init__(self):
            if not 0 < self.factor <= 1:
                raise RecipeError(f"`factor` must be in (0, 1], got {self.factor!r}")


    def scale_stage(ctx, cfg):
        with torch.no_grad():
            for layer in ctx.model.encoder.layer:
                layer.output.dense.weight.mul_(cfg.factor)
        return ctx.model, {"factor": cfg.factor}


    register(MethodSpec(name="toy_scale", config_cls=ScaleConfig, handler=scale_stage, terminal=True,
                        card_tag="toy-scaled"))
    '''
)

BERT = {
    "model_type": "bert",
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


@pytest.fixture
def toy_method(tmp_path, monkeypatch):
    (tmp_path / "toy_method_mod.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    import toy_method_mod  # noqa: F401  (registers toy_scale)

    yield registry.get_method("toy_scale")
    registry.unregister("toy_scale")
    sys.modules.pop("toy_method_mod", None)


def _recipe(out, stages):
    return {"model": {"config": BERT}, "output_dir": str(out), "stages": stages, "evaluate": ["size"],
            "eval_samples": 4, "eval_max_length": 16}


def test_a_registered_toy_method_runs_as_a_recipe_stage_with_its_card_tag(toy_method, tmp_path):
    recipe = parse_recipe(_recipe(tmp_path / "out", [{"toy_scale": {"factor": 0.25}}]))
    assert type(recipe.stages[0].config).__name__ == "ScaleConfig"
    result = run_recipe(recipe)
    assert [(r["stage"], r["factor"]) for r in result.records] == [("toy_scale", 0.25)]
    card = (result.output_dir / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert "toy-scaled" in meta["tags"]
    cc = json.loads((result.output_dir / "compression_config.json").read_text())
    assert cc["stages"][0]["stage"] == "toy_scale"


def test_the_toy_methods_order_rule_and_config_validation_come_from_its_spec(toy_method, tmp_path):
    with pytest.raises(RecipeError, match=r"stages\[1\]\.drop_layers: nothing may follow toy_scale"):
        parse_recipe(_recipe(tmp_path, [{"toy_scale": {}}, {"drop_layers": {"layers": [0]}}]))
    with pytest.raises(RecipeError, match=r"`factor` must be in \(0, 1\], got 2"):
        parse_recipe(_recipe(tmp_path, [{"toy_scale": {"factor": 2}}]))
    with pytest.raises(RecipeError, match="unknown key `factr`; did you mean `factor`"):
        parse_recipe(_recipe(tmp_path, [{"toy_scale": {"factr": 0.5}}]))


def test_unknown_stage_lists_the_registered_ones_and_double_registration_is_refused(toy_method, tmp_path):
    with pytest.raises(RecipeError, match="unknown stage `toy_scal`; did you mean `toy_scale`"):
        parse_recipe(_recipe(tmp_path, [{"toy_scal": {}}]))
    other = registry.MethodSpec(name="toy_scale", config_cls=dict, handler=lambda ctx, cfg: (ctx.model, {}))
    with pytest.raises(HfCompressError, match="already registered"):
        registry.register(other)


def test_builtin_methods_are_all_registered_with_their_metadata():
    table = registry.methods()
    assert {"student_from_teacher", "drop_layers", "distill", "prune_heads", "sparsify", "quantize_int8"} <= set(
        table
    )
    assert table["quantize_int8"].terminal and table["quantize_int8"].base_model_relation == "quantized"
    assert table["distill"].needs_shrunk and not table["distill"].shrinks
    assert table["student_from_teacher"].first_only
    for spec in table.values():
        assert spec.card_tag and callable(spec.handler)
