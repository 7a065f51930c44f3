"""plan_compression on a tiny BERT with a deterministic fake latency timer: the plan meets its target on
its own numbers, its predictions equal the planned model's, a search is deterministic and resumable, an
unregistered method is left out with a note, and a target nothing meets returns the best found."""

from __future__ import annotations

import pytest
import torch
from planner_helpers import SMALL_SPACE, fake_latency, linear_cost, never_called, texts, tiny_bert

from hf_compress.core import registry
from hf_compress.errors import HfCompressError
from hf_compress.evaluation import model_bytes, param_count
from hf_compress.planner import Target, TargetError, parse_target, plan_compression
from hf_compress.core.context import StageContext
from hf_compress.planner.cost import run_stages
from hf_compress.planner.quality import proxy_loss
from hf_compress.recipe.loading import char_tokenizer

TOK = char_tokenizer()


def plan(target="speedup=1.6", **kwargs):
    options = dict(tokenizer=TOK, target=target, task="feature-extraction", space=SMALL_SPACE, heal_steps=2,
                   distill_steps=3, max_length=32, latency_fn=fake_latency, progress=False, top_k=2)
    options.update(kwargs)
    return plan_compression(tiny_bert(), texts(), **options)


def comparable(p) -> tuple:
    rows = [{k: v for k, v in r.items()} for r in p.rows]
    return p.stages, p.met, p.message, p.predicted, rows


@pytest.fixture(scope="module")
def speed_plan():
    return plan()


@pytest.mark.parametrize(
    "text, match",
    [("speedup=0.5", "speedup must be > 1"), ("params=1.5", r"params must be a fraction .* in \(0, 1\)"),
     ("flops=3", "target key must be one of speedup, params, mib, latency-ms, got 'flops'"),
     ("speedup=fast", "must be a number, got 'fast'"), ("speedup", "KEY=VALUE"), ("mib=-4", "mib must be > 0"),
     ("latency-ms=nan", "finite"), ("params=0", r"\(0, 1\)")],
)
def test_malformed_or_impossible_targets_are_one_line_errors(text, match):
    with pytest.raises(TargetError, match=match) as info:
        parse_target(text)
    assert "\n" not in str(info.value)


def test_target_semantics():
    assert parse_target(" speedup = 4 ") == Target("speedup", 4.0)
    params = Target("params", 0.6)
    assert params.meets({"params_ratio": 0.6}) and not params.meets({"params_ratio": 0.61})
    assert Target("speedup", 4).meets({"speedup": 4.1}) and not Target("speedup", 4).meets({})
    assert "misses by 50%" in Target("speedup", 4).miss({"speedup": 2.0})


def _rebuild(stages):
    """The plan's stages without healing, run through the registry on the same base."""
    ctx = StageContext(model=tiny_bert(), teacher=tiny_bert(), tokenizer=TOK, texts=texts(),
                      task="feature-extraction", max_length=32)
    run_stages(ctx, [(n, f) for n, f in stages if n != "distill"])
    return ctx


def test_plan_meets_its_target_and_predicts_the_planned_model_exactly(speed_plan):
    p = speed_plan
    assert p.met and p.target.meets(p.predicted), p.message
    names = [n for n, _ in p.stages]
    assert "quantize_int8" not in names[:-1] and ("distill" in names) == any(
        n in names for n in ("drop_layers", "prune_heads"))
    ctx = _rebuild(p.stages)
    assert param_count(ctx.model) == p.predicted["params"]  # exact, although predicted on random weights
    expected = (1e-9 * linear_cost(tiny_bert()) + 1e-6) / (1e-9 * linear_cost(ctx.model) + 1e-6)
    assert p.predicted["speedup"] == pytest.approx(expected)
    assert p.target.meets({"speedup": expected})


def test_the_proxy_of_the_plan_is_that_of_its_surgery():
    """With no int8 in the space, the chosen candidate's KL proxy equals the proxy of its stages rerun."""
    p = plan(space={**SMALL_SPACE, "int8": (None,)})
    ctx = _rebuild(p.stages)
    again = proxy_loss(tiny_bert(), ctx.model, ctx.batches(4), "feature-extraction")
    assert p.predicted["proxy"] == pytest.approx(again, rel=1e-5, abs=1e-7)


def test_same_seed_same_plan_and_a_search_resumes_from_its_log_without_measuring_again(speed_plan, tmp_path):
    log = tmp_path / "log.jsonl"
    first = plan(log=log)
    assert comparable(first) == comparable(speed_plan)  # a fresh search, same seed: the same plan
    lines = log.read_text().splitlines()
    second = plan(log=log, latency_fn=never_called)
    assert comparable(second) == comparable(first)
    assert log.read_text().splitlines() == lines  # nothing new was measured
    with pytest.raises(HfCompressError, match="written for another model"):
        plan_compression(tiny_bert(seed=1), texts(), tokenizer=TOK, target="speedup=1.6", space=SMALL_SPACE,
                         log=log, latency_fn=fake_latency, progress=False)


def test_an_unmeetable_target_returns_the_best_found_and_says_by_how_much():
    p = plan(target="speedup=50")
    assert not p.met
    assert "no candidate" in p.message and "misses by" in p.message and "speedup" in p.message
    fastest = max(r["speedup"] for r in p.rows if "speedup" in r)
    assert p.predicted["speedup"] == fastest and p.stages


def test_max_drop_picks_the_fastest_within_the_drop():
    loose = plan(target="speedup=1.2", max_drop=0.99, top_k=4)
    assert loose.met and "fastest" in loose.message
    healed = [r for r in loose.rows if r.get("quality") is not None and r.get("meets")]
    assert loose.predicted["speedup"] == max(r["speedup"] for r in healed)


def test_an_unregistered_method_is_left_out_with_a_note(monkeypatch):
    table = registry.methods()
    monkeypatch.setattr(registry, "_METHODS", {k: v for k, v in table.items() if k != "prune_heads"})
    p = plan(target="speedup=1.2")
    assert any("`prune_heads` is not registered" in n for n in p.notes)
    assert all(r["heads"] == 0 for r in p.rows)
    assert any("sparsity is not searched" in n for n in p.notes)


def test_bad_options_are_refused_before_searching():
    for kwargs, match in (({"max_drop": 1.5}, "max_drop"), ({"top_k": 0}, "top_k"), ({"minutes": -1}, "minutes")):
        with pytest.raises(HfCompressError, match=match):
            plan(latency_fn=never_called, **kwargs)


def test_the_model_is_left_as_it_was():
    """Healing freezes its teacher (the model given): the planner restores it, weights untouched."""
    model = tiny_bert()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan_compression(model, texts(), tokenizer=TOK, target="speedup=1.6", space=SMALL_SPACE, heal_steps=1,
                     max_length=32, latency_fn=fake_latency, progress=False, top_k=3)
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_only_the_candidates_closest_to_the_target_are_scored_when_capped():
    p = plan(target="params=0.95", max_scored=2, top_k=1)
    scored = [r for r in p.rows if r.get("proxy") is not None]
    assert len(scored) == 2 and any("were not scored" in n for n in p.notes)
    skipped = [r for r in p.rows if r.get("meets") and r.get("proxy") is None]
    assert skipped and max(r["params_ratio"] for r in scored) >= max(r["params_ratio"] for r in skipped)


def test_a_resumed_search_with_no_time_left_reads_everything_from_its_log(tmp_path):
    log = tmp_path / "log.jsonl"
    first = plan(log=log)
    again = plan(log=log, latency_fn=never_called, minutes=1e-6)
    assert comparable(again) == comparable(first)  # sizes too: the size phase reads them from the log


def test_float_fallback_candidate_leaves_one_projection_per_block_in_float():
    p = plan(target="speedup=1.2", space={"keep": (1.0,), "heads": (0.0,), "ffn": (0.0,), "int8": (None, "w8a8-fb")})
    assert p.met, p.message
    (name, fields), = [s for s in p.stages if s[0] == "quantize_int8"]
    layers = tiny_bert().config.num_hidden_layers
    assert fields["float_fallback"] == layers and fields["mode"] == "w8a8"
    ctx = _rebuild(p.stages)
    kinds = [type(m).__name__ for n, m in ctx.model.named_modules() if ".layer." in n]
    assert kinds.count("Linear") == layers and kinds.count("Int8Linear") == 6 * layers - layers
    chosen = next(r for r in p.rows if r["key"] == "L4-h0-f0-w8a8-fb")  # sized as a range, then built: exact
    assert chosen["bytes_exact"] is True and "bytes_low" not in chosen
    assert p.predicted["bytes"] == model_bytes(ctx.model) and p.predicted["mib"] == model_bytes(ctx.model) / 2**20


def test_a_params_target_leaves_int8_out_with_a_note():
    """int8 changes bytes, not parameters: under params= it could only cost quality, so it is not searched."""
    p = plan(target="params=0.9", latency_fn=fake_latency)
    assert all(r["int8"] is None for r in p.rows) and p.candidate["int8"] is None
    assert any("left out of a params target" in n for n in p.notes)
    assert any(r["int8"] for r in plan(target="mib=0.08").rows)  # a size in bytes still searches it
