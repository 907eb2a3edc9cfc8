"""The package's import graph: no cycles, and no imports upward through the layers.

Every ``import`` statement counts, also the ones inside functions: a lazy import hides a cycle from Python,
not from a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mgm_omni"

# A module may import its own room and any room of a lower layer, never a higher one.
LAYERS = [
    {"config", "audio", "text", "checkpoint"},
    {"models"},
    {"generation"},
    {"hub", "engine", "eval", "data", "training"},
    {"serving"},
    {"cli"},
]
# Rooms of one layer that must not import each other either.
SIBLINGS_APART = {("engine", "eval"), ("eval", "engine"), ("data", "eval"), ("training", "eval"),
                  ("hub", "engine"), ("hub", "eval")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            # the longest prefix that is a module of ours
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("mgm_omni"):
                found.add(t)
    return found


def _graph() -> dict[str, set[str]]:
    files = {(_module_name(p)): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {m: _imports(p, m, modules) for m, p in files.items()}


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _layer(room: str | None) -> int | None:
    for i, rooms in enumerate(LAYERS):
        if room in rooms:
            return i
    return None


def test_every_room_has_a_layer():
    rooms = {_room(m) for m in _graph()} - {None}
    unplaced = sorted(r for r in rooms if _layer(r) is None)
    assert not unplaced, f"rooms without a layer in tests/test_layout.py: {unplaced}"


def test_no_import_cycles():
    graph = _graph()
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules (re-exports) is not a cycle
            if len(comp) > 1 and not all(c.startswith(min(comp, key=len) + ".") or c == min(comp, key=len)
                                         for c in comp):
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_no_upward_imports():
    bad = []
    for module, deps in _graph().items():
        room = _room(module)
        layer = _layer(room)
        for dep in deps:
            dep_room = _room(dep)
            dep_layer = _layer(dep_room)
            if layer is None or dep_layer is None or dep_room == room:
                continue
            if dep_layer > layer or (room, dep_room) in SIBLINGS_APART:
                bad.append(f"{module} -> {dep}")
    assert not bad, "imports upward through the layers:\n" + "\n".join(sorted(bad))


def test_graph_sees_a_known_edge():
    """The walker itself works: a module we know imports another is seen doing so."""
    graph = _graph()
    assert "mgm_omni.models.layers" in graph["mgm_omni.models.qwen"]


@pytest.mark.parametrize("room", ["models"])
def test_models_hold_no_engines(room):
    """Plain nn.Modules: nothing under models/ imports generation, engine, serving or threads."""
    for module, deps in _graph().items():
        if _room(module) == room:
            assert not any(_room(d) in {"generation", "engine", "serving", "cli"} for d in deps), module
