"""Import layers (docs/architecture.md): fourd/ at the bottom; video4d/ and recon/ beside each other and
independent; eval/ and infer4d/ above them; launch/ on top; no import circles between modules.

Imports are read from the source with ``ast`` (module-level and function-level alike), so a lazy
import inside a function counts as much as one at the top of a file."""
from __future__ import annotations

import ast
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fourd", "video4d", "recon", "eval", "infer4d", "launch")
# package -> the packages of ours it must never import
FORBIDDEN = {
    "fourd": {"video4d", "recon", "eval", "infer4d", "launch"},
    "video4d": {"recon", "eval", "infer4d", "launch"},
    "recon": {"video4d", "eval", "infer4d", "launch"},
    "eval": {"launch"},
    "infer4d": {"launch"},
    "launch": set(),
}


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """``{module: {imported name: line}}`` for every module of :data:`PACKAGES` under ``root``
    (relative imports resolved; ``from a import b`` records both ``a`` and ``a.b``)."""
    graph: dict[str, dict[str, int]] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            name = _module_name(root, path)
            is_package = path.name == "__init__.py"
            targets: dict[str, int] = {}
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    targets.update({alias.name: node.lineno for alias in node.names})
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                        base = ".".join(anchor + ([node.module] if node.module else []))
                    targets.setdefault(base, node.lineno)
                    targets.update({f"{base}.{alias.name}": node.lineno for alias in node.names})
            graph[name] = targets
    return graph


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """``"module:line imports target"`` for every import that points up or sideways (see :data:`FORBIDDEN`)."""
    return [f"{module}:{line} imports {target}" for module, targets in graph.items() for target, line in targets.items()
            if target.split(".")[0] in FORBIDDEN[module.split(".")[0]]]


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (import circles), each sorted."""

    def resolve(target: str):
        parts = target.split(".")
        while parts and ".".join(parts) not in graph:
            parts.pop()
        return ".".join(parts) or None

    edges = {m: {r for t in targets if (r := resolve(t)) and r != m} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return cycles


def test_layers_only_point_down_and_nothing_is_circular():
    graph = import_graph(ROOT)
    assert {"fourd.weights", "video4d.pipeline", "recon.inference", "infer4d.job", "eval.runner", "launch.infer"} <= set(graph)
    assert layer_violations(graph) == []
    assert import_cycles(graph) == []


def test_the_checker_sees_function_level_imports_and_circles(tmp_path):
    """The checks above can fail: a planted lazy import upwards and a two-module circle are found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "video4d" / "a.py").write_text("def f():\n    from recon import b\n    from . import c\n")
    (tmp_path / "video4d" / "c.py").write_text("import video4d.a\n")
    (tmp_path / "fourd" / "x.py").write_text("from ..eval import runner\n")
    graph = import_graph(tmp_path)
    assert layer_violations(graph) == ["fourd.x:1 imports eval", "fourd.x:1 imports eval.runner", "video4d.a:2 imports recon", "video4d.a:2 imports recon.b"]
    assert import_cycles(graph) == [["video4d.a", "video4d.c"]]
    os.remove(tmp_path / "video4d" / "c.py")
    assert import_cycles(import_graph(tmp_path)) == []
