"""scripts/compare_models.py on tiny BERT folders (no probes, which need the real assets): the base compares
to itself at cosine 1, an int8 copy (timed eager here) keeps its parameter count and is smaller on disk, the table has every row, and
a malformed LABEL=FOLDER is refused."""

import copy
import importlib.util
import sys
from pathlib import Path

import pytest
from planner_helpers import tiny_bert

from hf_compress.evaluation import param_count
from hf_compress.methods.int8.quantize import quantize_int8
from hf_compress.recipe.loading import char_tokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compare_models.py"


def load_script():
    spec = importlib.util.spec_from_file_location("compare_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_models"] = module
    spec.loader.exec_module(module)
    return module


def test_base_and_an_int8_copy_side_by_side(tmp_path, monkeypatch):
    module = load_script()
    base, q = tmp_path / "base", tmp_path / "int8"
    model = tiny_bert()
    model.save_pretrained(base)
    quantize_int8(copy.deepcopy(model), mode="w8a8").save_pretrained(q)
    for folder in (base, q):
        char_tokenizer().save_pretrained(folder)
    import hf_compress.evaluation as evaluation

    monkeypatch.setattr(evaluation, "wiki_texts", lambda split, n: ["alpha beta gamma river"] * 16)
    rows = module.compare(str(base), {"int8": str(q)}, repeats=1, probes=False, samples=16, eager=True)
    by = {r["model"]: r for r in rows}
    assert by["base"]["embedding_cosine"] == pytest.approx(1.0) and by["base"]["speedup"] == 1.0
    assert by["int8"]["compiled"] is False and by["int8"]["params"] == param_count(model)  # eager: compiling is slow
    assert 0.9 < by["int8"]["embedding_cosine"] <= 1.0 and by["int8"]["disk_bytes"] < by["base"]["disk_bytes"]
    text = module.table(rows)
    assert "| base |" in text and "| int8 |" in text and "| – | – | – | – |" in text


def test_a_folder_without_label_is_refused(capsys):
    module = load_script()
    with pytest.raises(SystemExit):
        module.main(["minilm", "just-a-folder"])
    assert "each folder must be LABEL=FOLDER, got 'just-a-folder'" in capsys.readouterr().err
