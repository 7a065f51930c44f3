"""The model card: Hub metadata (base_model, base_model_relation, tags), the measured table, how to load."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import ModelCard

from hf_compress.io.model_card import base_model_relation, build_model_card, format_results_table

ROWS = [
    {"model": "base", "params": 22_713_216, "disk_bytes": 90_868_376, "latency_ms": 20.0},
    {
        "model": "compressed",
        "params": 9_000_000,
        "disk_bytes": 12_000_000,
        "latency_ms": 8.0,
        "speedup": 2.5,
        "embedding_cosine": 0.9312,
    },
]


def test_table_formats_every_measured_column_and_marks_missing_values():
    table = format_results_table(ROWS)
    lines = table.splitlines()
    assert lines[0] == (
        "| model | parameters | bytes on disk | CPU latency (median) | speed-up | embedding cosine to base |"
    )
    assert lines[2] == "| base | 22.71M | 86.7 MiB | 20.0 ms | – | – |"
    assert lines[3] == "| compressed | 9.00M | 11.4 MiB | 8.0 ms | 2.50× | 0.9312 |"


@pytest.mark.parametrize(
    "stages, relation",
    [
        (["student_from_teacher", "distill", "prune_heads", "quantize_int8"], "quantized"),
        (["student_from_teacher", "distill"], "finetune"),
        (["sparsify"], "finetune"),
    ],
)
def test_relation_is_quantized_only_when_int8_weights_are_stored(stages, relation):
    assert base_model_relation(stages) == relation


def test_card_round_trips_through_huggingface_hub_with_our_metadata(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "m.M"}})
    )
    stages = ["student_from_teacher", "distill", "prune_heads", "quantize_int8"]
    card = build_model_card(
        tmp_path,
        base="minilm",
        task="feature-extraction",
        stage_names=stages,
        results_table=format_results_table(ROWS),
        recipe_yaml="version: 1\nmodel: minilm\n",
    )
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert data["base_model_relation"] == "quantized" and data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "feature-extraction"
    assert {"hf-compress", "distillation", "head-pruning", "int8", "layer-pruning"} <= set(data["tags"])
    assert format_results_table(ROWS) in loaded.text and "model: minilm" in loaded.text
    assert "trust_remote_code=True" in loaded.text and "import hf_compress" in loaded.text


def test_card_of_a_local_model_has_no_base_model_and_a_stock_load_snippet(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    card = build_model_card(
        tmp_path,
        base=None,
        task="causal-lm",
        stage_names=["drop_layers"],
        results_table="|t|",
        recipe_yaml="x: 1",
    )
    data = card.data.to_dict()
    assert "base_model" not in data and "base_model_relation" not in data
    assert data["pipeline_tag"] == "text-generation"
    assert 'AutoModelForCausalLM.from_pretrained("REPO_OR_FOLDER")' in card.text
    assert "trust_remote_code" not in card.text and "import hf_compress" not in card.text


def test_card_records_the_sparsity_pattern_and_measured_zeros_from_the_config(tmp_path):
    import torch

    from hf_compress import sparsify
    from tiny_models import tiny_model

    model = sparsify(tiny_model("llama"), method="magnitude", pattern="2:4")
    model.save_pretrained(tmp_path)
    measured = 100 * json.loads((tmp_path / "config.json").read_text())["sparsity_config"]["global_sparsity"]
    zeros = [(m.weight == 0).float().mean() for n, m in model.named_modules()
             if isinstance(m, torch.nn.Linear) and n != "lm_head"]
    assert measured == pytest.approx(100 * float(torch.stack(zeros).mean()), abs=0.1)
    card = build_model_card(tmp_path, base=None, task="causal-lm", stage_names=["sparsify"],
                            results_table=format_results_table(ROWS), recipe_yaml="version: 1\n")
    assert "pattern `2:4`" in card.text and f"measured {measured:.1f}% zeros" in card.text
