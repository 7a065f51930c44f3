"""Issue 15 item 1: every surgery keeps every per-layer config field consistent with every other surgery,
in any order, and the saved folder reloads (stock transformers, remote code where written) to the same
function as the model in memory."""

from __future__ import annotations

import pytest
import torch
import transformers

from hf_compress import drop_layers, prune_heads, student_from_teacher
from tiny_models import tiny_batch, tiny_model

PLANS = {"bert": {0: [1], 2: [0, 3], 3: [2]}, "gpt2": {0: [1], 2: [0, 3], 3: [2]}, "llama": {0: [1], 2: [0]}}


def _reload_matches(model, folder) -> None:
    model.save_pretrained(folder)
    auto = transformers.AutoModelForMaskedLM if model.config.model_type == "bert" else (
        transformers.AutoModelForCausalLM)
    reloaded = auto.from_pretrained(folder, trust_remote_code=True).eval()
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, atol=1e-5, rtol=1e-4)


def _heads_then_drop(m):
    prune_heads(m, PLANS[m.config.model_type])
    return drop_layers(m, [1])


def _heads_then_student(m):
    prune_heads(m, PLANS[m.config.model_type])
    return student_from_teacher(m, keep=[0, 3])


def _drop_then_heads(m):
    drop_layers(m, [1])
    return prune_heads(m, {0: [1], 1: [0]})


def _heads_drop_heads_drop(m):
    prune_heads(m, PLANS[m.config.model_type])
    drop_layers(m, [0])
    prune_heads(m, {0: [1]} if m.config.model_type != "llama" else {1: [1]})
    return drop_layers(m, [2])


ORDERS = [_heads_then_drop, _heads_then_student, _drop_then_heads, _heads_drop_heads_drop]


@pytest.mark.parametrize("order", ORDERS, ids=lambda f: f.__name__.strip("_"))
@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama"])
def test_any_order_of_surgeries_reloads_to_the_same_function(model_type, order, tmp_path):
    model = order(tiny_model(model_type))
    _reload_matches(model, tmp_path / "out")


def test_drop_layers_renumbers_pruned_heads_of_kept_layers():
    model = tiny_model("bert")
    prune_heads(model, {1: [0], 3: [2, 3]})
    drop_layers(model, [0, 2])
    assert model.config.pruned_heads == {"0": [0], "1": [2, 3]}
