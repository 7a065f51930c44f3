"""A recipe caches the teacher once (distill.teacher_cache) and distils from the cache on every later run."""

from __future__ import annotations

import json
import os

import pytest
import torch

from hf_compress.distillation.cache_format import META_FILE
from hf_compress.errors import HfCompressError, RecipeError
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe

LLAMA = {"model_type": "llama", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
         "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "intermediate_size": 64,
         "max_position_embeddings": 64, "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}


def _recipe(tmp_path, out, **distill):
    words = "alpha beta gamma delta river city music science history sport art law".split()
    g = torch.Generator().manual_seed(0)
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(" ".join(words[int(i)] for i in torch.randint(0, 12, (10,), generator=g))
                               for _ in range(40)))
    return parse_recipe({
        "model": {"config": LLAMA}, "task": "causal-lm", "data": {"name": str(texts)},
        "output_dir": str(tmp_path / out), "evaluate": ["size"], "eval_samples": 4, "eval_max_length": 16,
        "stages": [{"student_from_teacher": {"keep": [0, 2]}},
                   {"distill": {"max_steps": 3, "batch_size": 4, "max_length": 16, "logging_steps": 1,
                                "alpha_hidden": 0.5, **distill}}],
    })


def test_cache_is_written_once_and_reused(tmp_path):
    cache = str(tmp_path / "teacher-cache")
    first = run_recipe(_recipe(tmp_path, "a", teacher_cache=cache, top_k=8))
    meta = json.load(open(os.path.join(cache, META_FILE)))
    assert meta["complete"] and meta["top_k"] == 8 and meta["hidden_layers"] == [2, 4]
    stamp = os.path.getmtime(os.path.join(cache, "data-00000.arrow"))
    second = run_recipe(_recipe(tmp_path, "b", teacher_cache=cache, top_k=8))
    assert os.path.getmtime(os.path.join(cache, "data-00000.arrow")) == stamp  # reused, not rewritten
    assert first.records[1]["teacher_cache"] == cache
    assert second.records[1]["train_loss"] == pytest.approx(first.records[1]["train_loss"], rel=1e-6)
    live = run_recipe(_recipe(tmp_path, "c"))
    assert live.records[1]["first_logged_loss"] != first.records[1]["first_logged_loss"]  # top-8, not dense
    with pytest.raises(HfCompressError, match="another top_k"):
        run_recipe(_recipe(tmp_path, "d", teacher_cache=cache, top_k=16))


def test_bad_cache_options_are_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match="`top_k` must be"):
        _recipe(tmp_path, "x", teacher_cache="c", top_k=0)
    with pytest.raises(RecipeError, match="`logit_loss` must be forward_kl, reverse_kl or jsd with a teacher_cache"):
        _recipe(tmp_path, "x", teacher_cache="c", logit_loss="mse")
