"""`SentenceTransformer(out).encode` of a compressed sentence-transformers model equals the in-memory compressed
model's pooled, normalised output (runs where sentence-transformers is installed: `make test-eco`)."""

from __future__ import annotations

import pytest
import torch
from ecosystem.st_folder import MAX_SEQ_LENGTH, TEXTS, make_st_folder, pooled_normalised, recipe_dict

import hf_compress  # noqa: F401  registers the int8 loader, as the card's "How to load" says
from hf_compress.recipe.runner import run_recipe
from hf_compress.recipe.schema import parse_recipe

sentence_transformers = pytest.importorskip("sentence_transformers")


@pytest.mark.parametrize("stages", [
    [{"student_from_teacher": {"keep": [0, 3]}}],
    [{"student_from_teacher": {"keep": [0, 3]}}, {"quantize_int8": {"mode": "w8a8"}}],
], ids=["layers", "layers+w8a8"])
def test_encode_equals_the_compressed_model(tmp_path, stages):
    base = make_st_folder(tmp_path / "base")
    result = run_recipe(parse_recipe(recipe_dict(base, tmp_path / "out", stages)))
    st = sentence_transformers.SentenceTransformer(str(result.output_dir), device="cpu")
    assert st.max_seq_length == MAX_SEQ_LENGTH  # from sentence_bert_config.json, not the 64 positions
    got = torch.as_tensor(st.encode(TEXTS, convert_to_numpy=True))
    from transformers import AutoTokenizer

    want = pooled_normalised(result.model, AutoTokenizer.from_pretrained(result.output_dir))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-5)  # Normalize kept
