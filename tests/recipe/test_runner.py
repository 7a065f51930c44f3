"""run_recipe on tiny models through every stage: each stage's effect is in the saved folder, the folder
reloads to the in-memory model, and push_to_hub uploads our card."""

from __future__ import annotations

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hf_compress.io.checkpoint import describe, load_compressed
from hf_compress.recipe.loading import load_model, load_texts
from hf_compress.recipe.measure import agreement
from hf_compress.recipe.runner import _eval_data, run_recipe
from hf_compress.recipe.schema import parse_recipe

BERT = {
    "model_type": "bert",
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
LLAMA = {
    "model_type": "llama",
    "vocab_size": 100,
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "bos_token_id": 2,
    "eos_token_id": 3,
    "pad_token_id": 0,
}
IDS = [[2, 7, 9, 11, 13, 17, 19, 3]]


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id))

    def list_repo_files(self, repo_id, **kwargs):
        return list(getattr(self, "repo_files", []))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(
            (
                "create_commit",
                repo_id,
                {op.path_in_repo: open(op.path_or_fileobj, "rb").read() for op in operations},
            )
        )


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    words = "alpha beta gamma delta river city music science history sport art law".split()
    g = torch.Generator().manual_seed(0)
    lines = [
        " ".join(words[int(i)] for i in torch.randint(0, len(words), (10,), generator=g)) for _ in range(60)
    ]
    path = tmp_path_factory.mktemp("texts") / "t.txt"
    path.write_text("\n".join(lines))
    return str(path)


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory, texts):
    recipe = parse_recipe(
        {
            "model": {"config": BERT},
            "task": "feature-extraction",
            "data": {"name": texts},
            "output_dir": str(tmp_path_factory.mktemp("bert") / "out"),
            "stages": [
                {"student_from_teacher": {"keep": [0, 3]}},
                {
                    "distill": {
                        "alpha_hidden": 1.0,
                        "max_steps": 3,
                        "batch_size": 4,
                        "max_length": 24,
                        "learning_rate": 1e-3,
                    }
                },
                {"prune_heads": {"fraction": 0.25, "num_batches": 2}},
                {"sparsify": {"sparsity": 0.5}},
                {"quantize_int8": {"mode": "w8a8"}},
            ],
            "evaluate": ["size", "teacher_agreement"],
            "eval_samples": 8,
            "eval_max_length": 24,
        }
    )
    api = FakeApi()
    return run_recipe(recipe, push_to_hub="me/tiny-bert", hub_api=api), api


def test_every_stage_leaves_its_mark_on_the_saved_checkpoint(bert_run):
    result, _ = bert_run
    stages = [r["stage"] for r in result.records]
    assert stages == ["student_from_teacher", "distill", "prune_heads", "sparsify", "quantize_int8"]
    assert result.records[1]["steps"] == 3
    assert result.records[2]["num_pruned"] == 2  # 25% of 4 heads in each of 2 layers
    info = describe(result.output_dir)
    assert info["layers"] == 2 and len(info["int8_modules"]) == result.records[4]["int8_modules"] > 0
    assert info["weight_zero_fraction"] > 0.3  # 50% per row in the sparsified matrices (the pooler is dense)
    assert info["auto_map"]  # physically pruned BERT heads ship a modeling file
    params = [r["params"] for r in result.rows]
    assert len(result.rows) == 6 and params[0] > params[1] >= params[2] > params[3]
    cc = json.loads((result.output_dir / "compression_config.json").read_text())
    assert [s["stage"] for s in cc["stages"]] == stages and cc["measured"][1]["disk_bytes"] > 0


def test_push_uploads_the_finished_folder_with_our_card(bert_run):
    result, api = bert_run
    (_, repo), (_, repo2, files) = api.calls
    assert repo == repo2 == "me/tiny-bert"
    assert set(files) == {p.name for p in result.output_dir.iterdir()}
    card = ModelCard(files["README.md"].decode())
    assert "base_model_relation" not in card.data.to_dict()  # a config-built model has no Hub base model
    assert "int8" in card.data.tags and result.table in card.text


def test_saved_folder_reloads_to_the_in_memory_model(bert_run):
    """In-process reload (the fresh-process, stock-transformers reloads are in tests/test_cli.py)."""
    from hf_compress.io.checkpoint import load_compressed

    result, _ = bert_run
    again = load_compressed(result.output_dir, trust_remote_code=True)
    with torch.inference_mode():
        expected = result.model(input_ids=torch.tensor(IDS)).last_hidden_state
        torch.testing.assert_close(again(input_ids=torch.tensor(IDS)).last_hidden_state, expected)
    assert sum(type(m).__name__ == "Int8Linear" for m in again.modules()) == result.records[4]["int8_modules"]


def test_causal_lm_recipe_with_importance_driven_stages_and_perplexity(tmp_path, texts):
    recipe = parse_recipe(
        {
            "model": {"config": LLAMA},
            "task": "causal-lm",
            "data": {"name": texts},
            "output_dir": str(tmp_path / "o"),
            "stages": [
                {"drop_layers": {"num_layers": 1, "num_batches": 2}},
                {"prune_heads": {"fraction": 0.5, "method": "random"}},
                {"distill": {"max_steps": 2, "batch_size": 4, "max_length": 24}},
                {"quantize_int8": {"mode": "w8a16"}},
            ],
            "evaluate": ["size", "teacher_agreement", "perplexity"],
            "eval_samples": 6,
            "eval_max_length": 24,
        }
    )
    result = run_recipe(recipe)
    assert len(result.records[0]["dropped"]) == 1 and len(result.records[0]["scores"]) == 4
    assert result.records[1]["num_pruned"] == 2 * 3  # half of 4 query heads in each of 3 layers
    base, final = result.rows[0], result.rows[-1]
    assert base["teacher_agreement"] == 1.0
    # the reported agreement is the saved model's against a fresh copy of the base, not a number in [0, 1]
    fresh, tokenizer, _ = load_model(recipe.model, recipe.task, recipe.seed)
    data = _eval_data(recipe, fresh, tokenizer, load_texts(recipe.data)[1])
    expected = agreement(load_compressed(result.output_dir, task="causal-lm"), fresh, "causal-lm", data.batches)
    assert final["teacher_agreement"] == pytest.approx(expected, abs=0.02) and 0.05 < expected < 1
    assert base["perplexity"] > 1 and final["perplexity"] > 1
    info = describe(result.output_dir)
    assert info["layers"] == 3 and info["heads"] == 2 and info["kv_heads"] == 2 and not info["auto_map"]
    card = ModelCard.load(result.output_dir / "README.md")
    assert card.data.pipeline_tag == "text-generation"
