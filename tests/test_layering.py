"""The import graph of hparse against its stated layering (README, "Layout of the code"):

    api, cli                      (top: what users call)
    engine                        (training, inference, evaluation runs)
    models | data | evaluation    (independent of each other)
    ops, io, metrics, viz, losses
    errors, registry, labels, config, config_schema, structures, devices   (bottom)

A module may import its own package and lower layers only (lazy imports inside functions count too),
and the modules imported at import time form no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "hparse"
LAYERS = {
    0: {"errors", "registry", "labels", "config", "config_schema", "structures", "devices"},
    1: {"ops", "io", "metrics", "viz", "losses"},
    2: {"models", "data", "evaluation"},
    3: {"engine"},
    4: {"api", "cli", "__init__", "__main__", "service"},
}
# packages of one layer that may use each other (low utilities, user-facing entry points); middle ones may not
SHARED_LAYERS = {0, 1, 4}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        pkg = module.split(".") if is_pkg else module.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    if node.module is None:  # from . import a, b -> submodules
        return [f"{base}.{a.name}" for a in node.names]
    return [base]


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(all hparse modules imported anywhere, those imported at import time)."""
    module, is_pkg = _module_name(path), path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    top_level = {id(n) for n in tree.body}
    everything, eager = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = _resolve(module, is_pkg, node)
        else:
            continue
        names = [n for n in names if n == "hparse" or n.startswith("hparse.")]
        everything.update(names)
        if id(node) in top_level:
            eager.update(names)
    return everything, eager


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    pkg = _package(module)
    for layer, names in LAYERS.items():
        if pkg in names:
            return layer
    raise AssertionError(f"{module}: package {pkg!r} has no layer; add it to LAYERS and the README")


MODULES = {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def _known(name: str) -> str | None:
    """The hparse module a dotted import name refers to (``hparse.models.MODELS`` -> ``hparse.models``)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    mine, pkg = _layer(module), _package(module)
    for target in filter(None, map(_known, GRAPH[module][0])):
        layer, tpkg = _layer(target), _package(target)
        if tpkg == pkg:
            continue
        assert layer < mine or (layer == mine and mine in SHARED_LAYERS), (
            f"{module} (layer {mine}) imports {target} (layer {layer}, package {tpkg})")


def test_no_import_time_cycles():
    edges = {m: {t for t in map(_known, GRAPH[m][1]) if t and t != m} for m in MODULES}
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(t):] + [m, t])
                                     if t in path else f"import cycle through {m} -> {t}")
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])


def test_the_checker_sees_a_wrong_arrow(tmp_path):
    """The layer table resolves relative imports as Python does (a check that cannot pass vacuously)."""
    src = tmp_path / "x.py"
    src.write_text("from ..engine.trainer import Trainer\n")
    node = ast.parse(src.read_text()).body[0]
    assert _resolve("hparse.models.x", False, node) == ["hparse.engine.trainer"]
    assert _layer("hparse.engine.trainer") > _layer("hparse.models.x")
