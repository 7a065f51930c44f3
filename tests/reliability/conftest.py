"""Shared pieces of the reliability tests (issue 15): a tiny recipe as plain data and a texts file."""

from __future__ import annotations

import copy

import pytest

BERT = {"model_type": "bert", "vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 4,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 64}
GPT2 = {"model_type": "gpt2", "vocab_size": 100, "n_embd": 32, "n_layer": 4, "n_head": 4, "n_positions": 64,
        "bos_token_id": 0, "eos_token_id": 0}
MODELS = {"bert": (BERT, "feature-extraction"), "gpt2": (GPT2, "causal-lm")}


@pytest.fixture(scope="session")
def texts_path(tmp_path_factory) -> str:
    words = "alpha beta gamma delta river city music science history sport art law".split()
    lines = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(10)) for i in range(60)]
    path = tmp_path_factory.mktemp("texts") / "t.txt"
    path.write_text("\n".join(lines))
    return str(path)


@pytest.fixture
def tiny_recipe(texts_path, tmp_path):
    """``make(stages, model="bert"|"gpt2", **top-level keys)``: a plain-data recipe on a tiny model writing to
    tmp_path/out."""

    def make(stages, model="bert", **top):
        config, task = MODELS[model]
        raw = {"model": {"config": copy.deepcopy(config)}, "task": task,
               "data": {"name": texts_path}, "output_dir": str(tmp_path / "out"), "stages": stages,
               "evaluate": ["size"], "eval_samples": 8, "eval_max_length": 24}
        raw.update(top)
        return raw

    return make
