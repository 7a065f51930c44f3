"""Issue 15 item 1, runner side: the runner reloads what it wrote and fails the run (writing nothing) when
the reload does not reproduce the model in memory."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_compress.errors import CheckpointError
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe

HEADS_THEN_DROP = [{"prune_heads": {"fraction": 0.25, "method": "random"}}, {"drop_layers": {"layers": [1]}}]


@pytest.mark.parametrize("model", ["bert", "gpt2"])
def test_head_pruning_then_layer_dropping_writes_a_loadable_folder(model, tiny_recipe):
    result = run_recipe(parse_recipe(tiny_recipe(HEADS_THEN_DROP, model=model)))
    auto = transformers.AutoModelForCausalLM if model == "gpt2" else transformers.AutoModel
    reloaded = auto.from_pretrained(result.output_dir, trust_remote_code=True).eval()
    ids = torch.tensor([[5, 9, 12, 40, 7]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids)[0], result.model(input_ids=ids)[0])


def test_a_folder_that_reloads_differently_fails_the_run_and_writes_nothing(tiny_recipe, monkeypatch, tmp_path):
    from hf_compress.methods.layers import drop

    monkeypatch.setattr(drop, "_renumber", lambda by_layer, keep: dict(by_layer))  # the old defect
    with pytest.raises(CheckpointError, match="does not reload|reloads to a different"):
        run_recipe(parse_recipe(tiny_recipe(HEADS_THEN_DROP)))
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
