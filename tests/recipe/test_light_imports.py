"""Validating a recipe imports each method's light ``config`` module, never its code, torch or transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
HEAVY = ("prune", "sparsify", "quantize", "drop", "importance")

_PROBE = """
import json, sys
from hf_compress.recipe.schema import load_recipe
load_recipe(sys.argv[1])
print(json.dumps({"methods": sorted(m for m in sys.modules if m.startswith("hf_compress.methods.")),
                  "heavy": sorted(m for m in ("torch", "transformers") if m in sys.modules)}))
"""


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_load_recipe_imports_no_method_code(recipe):
    out = subprocess.run([sys.executable, "-c", _PROBE, str(recipe)], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    heavy = [m for m in loaded["methods"] if m.rpartition(".")[2] in HEAVY]
    assert heavy == [], f"load_recipe({recipe.name}) imported method code {heavy}"
    assert any(m.endswith(".config") for m in loaded["methods"])  # the configs it validated against
    assert loaded["heavy"] == [], f"load_recipe({recipe.name}) imported {loaded['heavy']}"


def test_recipes_folder_is_not_empty():
    assert len(RECIPES) >= 2
