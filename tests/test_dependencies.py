"""Every third-party package the code imports is declared in pyproject.toml (filelock was imported by the
asset cache and declared nowhere: a fresh install without it could not fetch an asset)."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imported() -> dict[str, str]:
    """top-level module -> a file importing it, for every import that is neither stdlib nor ours."""
    found = {}
    for path in sorted((ROOT / "hf_compress").rglob("*.py")):
        if "remote_code" in path.parts:  # ships inside model folders: torch and transformers only
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "hf_compress":
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    undeclared = {}
    for module, where in _imported().items():
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & _declared():
            undeclared[module] = where
    assert undeclared == {}, f"imported but not in pyproject.toml: {undeclared}"
