"""What the planner computes once and reuses must equal what it would compute each time: importance scores
kept per model in the prefix cache's memo (layers once for every depth, FFN neurons once for every width
after the same layers were dropped, heads once per structure), and the original's side of the KL proxy."""

from __future__ import annotations

import copy

import pytest
import torch
from planner_helpers import texts, tiny_bert
from tiny_models import tiny_model

from hf_compress.core.context import StageContext
from hf_compress.errors import HfCompressError
from hf_compress.methods.heads import prune as heads_prune
from hf_compress.methods.layers import importance as layers_importance
from hf_compress.methods.width import importance as width_importance_module
from hf_compress.planner.cost import run_stages
from hf_compress.planner.quality import ReferenceOutputs, proxy_loss
from hf_compress.planner.shapes import PrefixCache
from hf_compress.recipe.loading import char_tokenizer

TOK = char_tokenizer()


def _ctx(model, task):
    return StageContext(model=model, teacher=copy.deepcopy(model), tokenizer=TOK, texts=texts(), task=task,
                        max_length=32)


def _counting(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


STRUCTURES = [
    [("drop_layers", {"num_layers": 1})],
    [("drop_layers", {"num_layers": 2})],
    [("drop_layers", {"num_layers": 1}), ("prune_width", {"ffn": 0.25})],
    [("drop_layers", {"num_layers": 1}), ("prune_width", {"ffn": 0.5})],
    [("drop_layers", {"num_layers": 1}), ("prune_width", {"ffn": 0.5}), ("prune_heads", {"fraction": 0.25})],
    [("drop_layers", {"num_layers": 1}), ("prune_width", {"ffn": 0.5}), ("prune_heads", {"fraction": 0.5})],
]


@pytest.mark.parametrize("family,task", [("llama", "causal-lm"), ("bert", "feature-extraction")])
def test_importance_is_scored_once_per_model_and_the_models_equal_fresh_surgery(monkeypatch, family, task):
    base = tiny_model(family) if task == "causal-lm" else tiny_bert()
    counts = {name: _counting(monkeypatch, module, fn) for name, module, fn in (
        ("layers", layers_importance, "layer_importance"), ("width", width_importance_module, "width_importance"),
        ("heads", heads_prune, "head_importance"))}
    cache = PrefixCache(_ctx(base, task), size=1)  # evictions too: the memo outlives the cached model
    built = [copy.deepcopy(cache.get(stages)[0]) for stages in STRUCTURES]
    # one model scored per kind: the base (every depth), the model after 1 dropped layer (every FFN
    # fraction), the model after that and FFN -50% (every head fraction)
    assert {k: len(v) for k, v in counts.items()} == {"layers": 1, "width": 1, "heads": 1}
    for stages, model in zip(STRUCTURES, built):
        fresh = _ctx(copy.deepcopy(base), task)  # the recipe runner's context: no memo
        run_stages(fresh, stages)
        assert _same_weights(model, fresh.model), stages
    # without the memo, every structure scores every stage it runs
    assert {k: len(v) for k, v in counts.items()} == {"layers": 1 + 6, "width": 1 + 4, "heads": 1 + 2}


def test_the_recipe_context_keeps_nothing_between_calls():
    ctx = _ctx(tiny_bert(), "feature-extraction")
    assert ctx.memo is None and ctx.memoized(("k",), lambda: 1) == 1 and ctx.memoized(("k",), lambda: 2) == 2


@pytest.mark.parametrize("family,task", [("llama", "causal-lm"), ("bert", "feature-extraction")])
@pytest.mark.parametrize("keep", ["all", "none", "one"])
def test_the_kept_reference_gives_the_live_proxy(family, task, keep):
    original = tiny_model(family) if task == "causal-lm" else tiny_bert()
    ctx = _ctx(original, task)
    batches = ctx.batches(3)
    first = ReferenceOutputs(original, batches, task)[0]
    max_bytes = {"all": 2**30, "none": 0, "one": first.numel() * first.element_size()}[keep]
    reference = ReferenceOutputs(original, batches, task, max_bytes=max_bytes)
    candidates = []
    for stages in ([("drop_layers", {"num_layers": 1})], [("prune_width", {"ffn": 0.5})]):
        surgery = _ctx(copy.deepcopy(original), task)
        run_stages(surgery, stages)
        candidates.append(surgery.model)
    for candidate in candidates:
        live = proxy_loss(original, candidate, batches, task)
        assert live > 0
        assert proxy_loss(reference, candidate, batches, task) == pytest.approx(live, rel=1e-6, abs=1e-9)
    kept = len(reference._kept)
    assert kept == {"all": 3, "none": 0, "one": 1}[keep]
    assert reference.computed == 3 + (len(candidates) - 1) * (3 - kept)


def test_a_reference_on_other_batches_is_refused():
    original = tiny_bert()
    ctx = _ctx(original, "feature-extraction")
    reference = ReferenceOutputs(original, ctx.batches(2), "feature-extraction")
    with pytest.raises(HfCompressError, match="other batches"):
        proxy_loss(reference, original, ctx.batches(2), "feature-extraction")
