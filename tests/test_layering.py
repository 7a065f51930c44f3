"""The dependency rule of ../shared/DESIGN.md, held by walking every import in the package: module-level
and inside functions, relative and absolute, ``import hf_compress`` included."""

import ast
from pathlib import Path

import pytest

import hf_compress

PACKAGE = Path(hf_compress.__file__).parent

# top-level part -> level; a part may import parts of its own level or lower (with the exceptions below)
LEVELS = {
    "errors": 0,
    "_version": 0,
    "arch": 1,
    "tasks": 1,
    "assets": 1,
    "core": 2,
    "methods": 3,
    "distillation": 3,
    "evaluation": 4,
    "planner": 5,
    "io": 6,
    "recipe": 6,
    "cli": 7,
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    return ".".join(rel.parts).removesuffix(".__init__")


def imports_of(source: str, module: str, is_package: bool, known=None):
    """Every module that ``source`` (the text of ``module``) imports, at any depth of the tree. ``from X
    import name`` counts as importing ``X.name`` when that is a module in ``known``, else as importing ``X``
    (so ``from ... import arch`` is an import of ``hf_compress.arch``, not of the package root)."""
    known = _all_modules() if known is None else known
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                yield sub if sub in known else target


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _graph() -> dict[str, set[str]]:
    mods = _all_modules()
    graph = {}
    for name, path in mods.items():
        found = imports_of(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", mods)
        graph[name] = {m for m in found if m in mods and m != name}
    return graph


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _method(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "methods" else None


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        part = _part(module)
        for target in targets:
            tpart = _part(target)
            if target == "hf_compress" and module != "hf_compress":
                bad.append(f"{module} imports the package root")
            elif part == "__init__" or tpart == "__init__":
                continue
            elif part not in LEVELS or tpart not in LEVELS:
                bad.append(f"{module} -> {target}: part without a level in LEVELS")
            elif LEVELS[tpart] > LEVELS[part]:
                bad.append(f"{module} (level {LEVELS[part]}) imports {target} (level {LEVELS[tpart]})")
            elif part == "distillation" and tpart == "methods":
                bad.append(f"{module} imports {target}: distillation never imports a method")
            elif part == "methods" and tpart == "methods" and _method(target) not in (None, _method(module)):
                bad.append(f"{module} imports {target}: a method never imports another method")
            elif part == "planner" and tpart in ("methods", "distillation"):
                bad.append(f"{module} imports {target}: the planner reaches methods through core.registry")
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), i.e. import cycles. A package's
    ``__init__`` importing its own submodules is not a cycle by itself."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def edges(v):
        return [w for w in graph.get(v, ()) if not v.startswith(w + ".")]  # child -> own package: not an edge

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_against_the_dependency_rule():
    bad = violations(_graph())
    assert not bad, "imports against ../shared/DESIGN.md:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = cycles(_graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    "module, source, expected",
    [
        ("hf_compress.methods.sparsity.x", "def f():\n    from ..int8 import quantize\n", "another method"),
        ("hf_compress.methods.sparsity.x", "import hf_compress\n", "package root"),
        ("hf_compress.distillation.x", "def f():\n    from ..methods.int8 import stage\n", "never imports"),
        ("hf_compress.core.x", "from ..recipe import schema\n", "level 2"),
        ("hf_compress.planner.x", "from ..methods.layers import drop\n", "through core.registry"),
    ],
)
def test_the_walk_sees_function_level_and_bare_imports(module, source, expected):
    mods = set(_all_modules()) | {module}
    found = {m for m in imports_of(source, module, False, mods) if m in mods or m == "hf_compress"}
    bad = violations({module: found})
    assert any(expected in b for b in bad), bad


def test_the_cycle_finder_finds_a_cycle_through_function_level_imports():
    graph = {"hf_compress.methods.int8.a": {"hf_compress.methods.int8.b"}, "hf_compress.methods.int8.b": set()}
    assert cycles(graph) == []
    graph["hf_compress.methods.int8.b"] = {"hf_compress.methods.int8.a"}
    assert cycles(graph) == [["hf_compress.methods.int8.a", "hf_compress.methods.int8.b"]]


def test_no_file_in_the_package_is_over_300_lines():
    limits = {"trainer.py": 500}
    long = [
        f"{p.relative_to(PACKAGE)}: {n}"
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > limits.get(p.name, 300)
    ]
    assert not long, long


def test_public_api_is_small_sorted_and_importable():
    names = [n for n in hf_compress.__all__ if n != "__version__"]
    assert names == sorted(names) and 10 <= len(names) <= 45


def test_every_public_name_resolves_to_an_object_defined_in_its_module():
    for name in hf_compress.__all__:
        value = getattr(hf_compress, name)
        if name != "__version__":
            assert getattr(value, "__name__", name) == name, name
