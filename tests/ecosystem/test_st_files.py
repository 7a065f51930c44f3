"""A compressed sentence-transformers model keeps its wrapper files and says so in its card (no
sentence-transformers needed: only JSON files are copied; tests/ecosystem/test_with_sentence_transformers.py
loads the result with the library)."""

from __future__ import annotations

import json

import pytest
from ecosystem.st_folder import BERT, make_st_folder, recipe_dict
from huggingface_hub import ModelCard

from hf_compress import copy_sentence_transformers_files
from hf_compress.errors import CheckpointError
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe


@pytest.fixture(scope="module")
def st_run(tmp_path_factory):
    base = make_st_folder(tmp_path_factory.mktemp("st-base"))
    out = tmp_path_factory.mktemp("st") / "out"
    stages = [{"student_from_teacher": {"keep": [0, 3]}}, {"quantize_int8": {"mode": "w8a8"}}]
    return base, run_recipe(parse_recipe(recipe_dict(base, out, stages)))


def test_wrapper_files_are_kept(st_run):
    base, result = st_run
    out = result.output_dir
    for name in ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
                 "1_Pooling/config.json"):
        assert (out / name).read_text() == (base / name).read_text(), name
    assert not (out / "2_Normalize").exists()  # the base has no files for it either


def test_card_says_sentence_transformers(st_run):
    _, result = st_run
    card = ModelCard.load(result.output_dir / "README.md")
    assert card.data.library_name == "sentence-transformers"
    assert card.data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "sentence-similarity", "int8"} <= set(card.data.tags)
    assert 'SentenceTransformer("REPO_OR_FOLDER")' in card.text and "import hf_compress" in card.text
    assert "hf_compress.compile_int8(model[0].auto_model)" in card.text  # the one line that gives the speed
    assert "hf_compress.compile_int8(model)" in card.text


def test_pooling_width_follows_the_model_and_bad_paths_are_refused(tmp_path):
    base = make_st_folder(tmp_path / "base")
    (tmp_path / "out").mkdir()
    copied = copy_sentence_transformers_files(base, tmp_path / "out", hidden_size=24)
    assert "1_Pooling" in copied and "modules.json" in copied
    pooling = json.loads((tmp_path / "out" / "1_Pooling" / "config.json").read_text())
    assert pooling["word_embedding_dimension"] == 24 != BERT["hidden_size"]
    modules = json.loads((base / "modules.json").read_text())
    modules[1]["path"] = "../elsewhere"
    (base / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(CheckpointError, match="leaves the folder"):
        copy_sentence_transformers_files(base, tmp_path / "out")
    with pytest.raises(CheckpointError, match="not a sentence-transformers folder"):
        copy_sentence_transformers_files(tmp_path / "out" / "1_Pooling", tmp_path / "out")
