"""The prune_width recipe stage: registered with its card tag, validates its YAML fields, runs in a recipe
after drop_layers / prune_heads and before int8, and records the sizes."""

import pytest
import torch
from huggingface_hub import ModelCard

from hf_compress.core.registry import get_method
from hf_compress.errors import RecipeError, SurgeryError
from hf_compress.io.checkpoint import describe
from hf_compress.methods.width.stage import PruneWidthConfig
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe

LLAMA = {"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64,
         "max_position_embeddings": 64, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}


def test_registered_with_its_card_tag():
    spec = get_method("prune_width")
    assert spec.card_tag == "width-pruning" and spec.config_cls is PruneWidthConfig and spec.shrinks


@pytest.mark.parametrize("fields,message", [({}, "needs `ffn` and/or `hidden`"),
                                            ({"ffn": 1.5}, "`ffn` as a fraction to remove must be in"),
                                            ({"hidden": 0.25, "num_batches": 0}, "`num_batches` must be > 0")])
def test_bad_stage_fields_are_recipe_errors(fields, message):
    with pytest.raises(RecipeError, match=message):
        PruneWidthConfig(**fields)


def test_recipe_drops_prunes_heads_then_width_then_int8(tmp_path):
    words = "alpha beta gamma delta river city music science history sport art law".split()
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[int(i)] for i in torch.randint(0, 12, (10,), generator=g)) for _ in range(40)]
    (tmp_path / "t.txt").write_text("\n".join(lines))
    recipe = parse_recipe({
        "model": {"config": LLAMA}, "task": "causal-lm", "data": {"name": str(tmp_path / "t.txt")},
        "output_dir": str(tmp_path / "o"),
        "stages": [{"drop_layers": {"num_layers": 1, "num_batches": 2}},
                   {"prune_heads": {"fraction": 0.5, "method": "random"}},
                   {"prune_width": {"ffn": 0.25, "hidden": 0.25, "num_batches": 2}},
                   {"quantize_int8": {"mode": "w8a16"}}],
        "evaluate": ["size"], "eval_samples": 4, "eval_max_length": 24,
    })
    result = run_recipe(recipe)
    record = result.records[2]
    assert record["before"] == {"ffn": 64, "hidden": 32} and record["after"] == {"ffn": 48, "hidden": 24}
    info = describe(result.output_dir)
    assert info["layers"] == 3 and info["heads"] == 2
    assert "width-pruning" in ModelCard.load(result.output_dir / "README.md").data.tags


def test_a_bad_size_fails_before_scoring(tmp_path):
    from hf_compress.methods.width.stage import prune_width_stage
    from tiny_models import tiny_model

    class Ctx:
        model = tiny_model("gpt2")

        def batches(self, n):
            raise AssertionError("scored before the size was checked")

    with pytest.raises(SurgeryError, match="hidden-channel pruning of gpt2 is refused"):
        prune_width_stage(Ctx(), PruneWidthConfig(hidden=0.25))
