"""Embedding probes (recipe/probes.py): the classifiers against naive references, the probes on a tiny BERT
with synthetic probe data, and the recipe / card wiring."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import tiny_model

from hf_compress.errors import RecipeError
from hf_compress.recipe import probes
from hf_compress.recipe.loading import char_tokenizer
from hf_compress.recipe.schema import parse_recipe


def test_nearest_centroid_matches_a_naive_loop():
    g = torch.Generator().manual_seed(0)
    train_x, test_x = torch.randn(60, 5, generator=g), torch.randn(40, 5, generator=g)
    train_y, test_y = torch.arange(60) % 3, torch.randint(0, 3, (40,), generator=g)
    right = 0
    for x, y in zip(test_x, test_y):
        best, best_sim = None, -2.0
        for c in range(3):
            mean = train_x[train_y == c].mean(0)
            sim = float(torch.dot(x, mean) / (x.norm() * mean.norm()))
            if sim > best_sim:
                best, best_sim = c, sim
        right += best == int(y)
    assert probes.nearest_centroid(train_x, train_y, test_x, test_y) == pytest.approx(right / 40)
    assert probes.nearest_centroid(train_x, train_y, test_x, torch.full((40,), -1)) == 0.0  # unknown class


def test_ranking_mrr_matches_a_naive_loop():
    g = torch.Generator().manual_seed(1)
    q, c = torch.randn(12, 4, generator=g), torch.randn(12, 4, generator=g)
    total = 0.0
    for i in range(12):
        sims = [float(torch.cosine_similarity(q[i], c[j], dim=0)) for j in range(12)]
        total += 1.0 / (1 + sum(s > sims[i] for s in sims))
    assert probes.ranking_mrr(q, c) == pytest.approx(total / 12, rel=1e-6)
    assert probes.ranking_mrr(q, q) == pytest.approx(1.0)


def test_linear_probe_separates_separable_data_and_is_deterministic():
    g = torch.Generator().manual_seed(2)
    centers = torch.randn(3, 8, generator=g) * 4
    y = torch.arange(90) % 3
    x = centers[y] + 0.3 * torch.randn(90, 8, generator=g)
    assert probes.linear_probe(x[:60], y[:60], x[60:], y[60:]) == 1.0
    noisy = torch.randn(90, 8, generator=g)
    first = probes.linear_probe(noisy[:60], y[:60], noisy[60:], y[60:])
    assert probes.linear_probe(noisy[:60], y[:60], noisy[60:], y[60:]) == first < 0.8  # labels are noise here


def test_outside_probes_on_a_tiny_bert(monkeypatch):
    words = ["a cat sat", "a dog ran", "the cat ran", "the dog sat", "no cat", "no dog"]
    pairs = (words * 3, words[::-1] * 3, [0, 1, 2] * 6)
    data = probes.ProbeData(snli_train=pairs, snli_test=pairs, docs_train=(words * 2, [0, 1] * 6),
                            docs_test=(words, [0, 1] * 3))
    monkeypatch.setattr(probes, "load_probe_data", lambda: data)
    model = tiny_model("bert", "base")
    before = copy.deepcopy(model.state_dict())
    out = probes.outside_probes(model, char_tokenizer(), ["snli_probe", "snli_ranking", "docs_probe"], 32)
    assert set(out) == {"snli_probe", "snli_ranking", "docs_probe"}
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert out["snli_ranking"] > 0  # six premises, one entailment pair each (label 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model is left as it was
    assert probes.outside_probes(model, char_tokenizer(), ["docs_probe"], 32).keys() == {"docs_probe"}


def test_embed_keeps_the_order_of_the_texts():
    model, tok = tiny_model("bert", "base"), char_tokenizer()
    texts = ["a much longer sentence here", "hi", "a mid one"]
    together = probes.embed(model, tok, texts, 32, batch_size=2)
    alone = torch.cat([probes.embed(model, tok, [t], 32) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_paragraphs_skip_markup_and_short_lines():
    text = "Title\n=====\n\n" + "x" * 250 + "\n\n.. note::\n   " + "y" * 300 + "\n\nshort\n\n" + "z" * 2000
    assert probes._paragraphs(text) == ["x" * 250]


BASE = {"model": "minilm", "task": "feature-extraction", "output_dir": "out/x",
        "stages": [{"student_from_teacher": {"num_layers": 3}}]}


def test_recipe_accepts_the_probes_for_encoders_only():
    recipe = parse_recipe({**BASE, "evaluate": ["size", "snli_probe", "snli_ranking", "docs_probe"]})
    assert recipe.evaluate[1:] == ["snli_probe", "snli_ranking", "docs_probe"]
    with pytest.raises(RecipeError, match="evaluate: `snli_probe` probes sentence embeddings and needs task "
                                          "feature-extraction, got task 'causal-lm'"):
        parse_recipe({**BASE, "task": "causal-lm", "evaluate": ["snli_probe"]})
    with pytest.raises(RecipeError, match="did you mean `docs_probe`"):
        parse_recipe({**BASE, "evaluate": ["doc_probe"]})


def test_card_has_a_column_for_every_probe():
    from hf_compress.io.model_card import format_results_table

    table = format_results_table([{"model": "base", "snli_probe": 0.5, "snli_ranking": 0.25, "docs_probe": 0.75}])
    assert "SNLI linear probe accuracy" in table and "0.250" in table and "Python-docs section probe" in table


def test_demo_order_prune_heads_then_bf16_distill_reports_the_probes(tmp_path, monkeypatch):
    """The demo's order: heads pruned before distillation (which then heals both), bf16 autocast, probes in
    every row of the results."""
    from hf_compress.recipe.runner import run_recipe

    words = ["a cat sat", "a dog ran", "the cat ran", "the dog sat", "no cat", "no dog"]
    monkeypatch.setattr(probes, "load_probe_data", lambda: probes.ProbeData(
        (words, words[::-1], [0, 1, 2] * 2), (words, words[::-1], [0, 1, 2] * 2), (words, [0, 1] * 3),
        (words, [0, 1] * 3)))
    (tmp_path / "t.txt").write_text("\n".join(f"{w} and {v}" for w in words for v in words))
    recipe = parse_recipe({
        "model": {"config": {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
                             "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}},
        "task": "feature-extraction", "data": {"name": str(tmp_path / "t.txt")},
        "output_dir": str(tmp_path / "out"),
        "stages": [{"student_from_teacher": {"keep": [0, 3]}}, {"prune_heads": {"fraction": 0.25, "num_batches": 2}},
                   {"distill": {"alpha_hidden": 1.0, "max_steps": 2, "batch_size": 4, "max_length": 16, "bf16": True}}],
        "evaluate": ["size", "teacher_agreement", "snli_probe", "snli_ranking", "docs_probe"],
        "eval_samples": 8, "eval_max_length": 16})
    result = run_recipe(recipe)
    assert [r["stage"] for r in result.records] == ["student_from_teacher", "prune_heads", "distill"]
    assert result.records[2]["steps"] == 2
    for row in result.rows:
        assert {"snli_probe", "snli_ranking", "docs_probe"} <= set(row)
    assert "SNLI ranking MRR" in (result.output_dir / "README.md").read_text()


def test_distill_bf16_must_be_a_bool():
    from hf_compress.distillation.stage import DistillConfig

    with pytest.raises(RecipeError, match="`bf16` must be true or false, got 'yes'"):
        DistillConfig(alpha_hidden=1.0, bf16="yes")


def test_linear_probe_works_under_inference_mode():
    x, y = torch.randn(30, 4), torch.arange(30) % 2
    expected = probes.linear_probe(x, y, x, y)
    with torch.inference_mode():
        xi = x.clone()
        assert probes.linear_probe(xi, y, xi, y) == expected


def test_docs_split_tests_on_heldout_files_only(tmp_path, monkeypatch):
    import glob

    from hf_compress import assets

    for section in probes.DOCS_SECTIONS:
        for i in range(12):
            folder = tmp_path / section
            folder.mkdir(exist_ok=True)
            (folder / f"f{i:02d}.rst.txt").write_text(f"{section} file {i} " + "w " * 120 + "\n\nshort")
    monkeypatch.setattr(assets, "get_asset", lambda name: str(tmp_path))  # a str, as get_asset returns
    (train, train_y), (test, test_y) = probes._docs_split((100, 100))
    files = sorted(glob.glob(str(tmp_path / "**" / "*.rst.txt"), recursive=True))
    held = {open(f).read().split("\n\n")[0].strip() for f in assets.heldout_split(files, "heldout")}
    assert test and set(test) <= held and not set(train) & held
    assert len(train) + len(test) == 12 * len(probes.DOCS_SECTIONS)
    assert [probes.DOCS_SECTIONS[y] for y in test_y] == [t.split(" ")[0] for t in test]
