"""Recipe data: local files split into disjoint training / held-out texts; bad fields name the fix."""

from __future__ import annotations

import json

import pytest

from hf_compress.errors import RecipeError
from hf_compress.recipe.loading import load_texts
from hf_compress.recipe.schema import DataSpec


def test_jsonl_with_a_text_field_splits_every_tenth_text_out_for_measuring(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps({"body": f"text {i}", "n": i}) for i in range(30)))
    train, heldout = load_texts(DataSpec(name=str(path), text_field="body", max_samples=20))
    assert heldout == ["text 0", "text 10", "text 20"]
    assert len(train) == 20 and not set(train) & set(heldout) and train[:2] == ["text 1", "text 2"]


def test_missing_text_field_lists_the_available_fields(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([{"body": "a"}, {"body": "b"}]))
    with pytest.raises(RecipeError, match=r"have no field 'text'; set `text_field` to one of \['body'\]"):
        load_texts(DataSpec(name=str(path)))


def test_unknown_data_name_is_refused_at_validation():
    with pytest.raises(RecipeError, match="must be a bundled data set"):
        DataSpec(name="no-such-data")
