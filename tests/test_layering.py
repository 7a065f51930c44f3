"""The dependency direction of ../shared/STYLE.md, held by walking every module's imports."""

import ast
from pathlib import Path

import hf_compress

PACKAGE = Path(hf_compress.__file__).parent

# part -> parts of hf_compress it may import (besides itself)
ALLOWED = {
    "errors": set(),
    "arch": {"errors"},
    "assets": {"errors"},
    "evaluation": {"errors", "assets"},
    "surgery": {"errors", "arch"},
    "distillation": {"errors", "arch"},
    "io": {"surgery", "errors", "arch", "evaluation"},
    "recipe": {"surgery", "distillation", "io", "evaluation", "errors", "arch", "assets"},
    "cli": {"recipe", "io", "evaluation", "errors", "arch", "assets", "surgery"},
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "__init__"


def _imports(path: Path, module: str):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    yield from (f"{target}.{a.name}" for a in node.names)
                else:
                    yield target
            elif node.module:
                yield node.module


def test_parts_import_only_what_they_may():
    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        part = _part(module)
        if part == "__init__" or part not in ALLOWED:
            continue
        for imported in _imports(path, module):
            if not imported.startswith("hf_compress.") or imported == "hf_compress.__version__":
                continue
            target = _part(imported)
            if target != part and target not in ALLOWED[part]:
                bad.append(f"{module} imports {imported}")
    assert not bad, "imports against the dependency direction:\n" + "\n".join(bad)


def test_public_api_is_small_sorted_and_importable():
    names = [n for n in hf_compress.__all__ if n != "__version__"]
    assert names == sorted(names) and 10 <= len(names) <= 30


def test_every_public_name_resolves_to_an_object_defined_in_its_module():
    for name in hf_compress.__all__:
        value = getattr(hf_compress, name)
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name
