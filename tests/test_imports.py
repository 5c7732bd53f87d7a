"""Every module of mapping imports on its own, in a fresh interpreter, and mapping's modules import each other
without a cycle (issue 22: one home for each generic thing, no import cycles)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mapping"


def module_names() -> dict[str, Path]:
    """``{dotted name: file}`` for every ``.py`` file of the package (``__init__.py`` as the package's name)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def module_level_imports(name: str, path: Path, modules: set[str]) -> set[str]:
    """The modules of the package that ``name`` imports when it is executed: import statements outside any
    function or class body (those under a module-level ``if`` or ``try`` included), relative ones resolved.
    ``name``'s own ancestor packages are left out: Python has started importing them before ``name``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    stack = list(ast.parse(path.read_text(), str(path)).body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stack.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return {m for m in found if m in modules and m != name and m not in ancestors}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first repeated last), or ``None`` when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: module_level_imports(name, path, set(modules)) for name, path in modules.items()}


def test_find_cycle_finds_a_cycle_and_only_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_the_graph_sees_relative_and_absolute_imports():
    graph = import_graph()
    assert "mapping.multitask.aggregator_base" in graph["mapping.multitask.qp_aggregators"]
    assert "mapping.checks" in graph["mapping.multitask.aggregators"]
    assert "mapping.device" in graph["mapping.results"]


def test_mapping_has_no_import_cycle():
    assert find_cycle(import_graph()) is None


# Run in a fresh interpreter: preload the heavy third-party libraries once, then fork one child per module of
# mapping, which imports that module and nothing of mapping before it (a full interpreter per module costs ~2 s).
ISOLATED_IMPORTS = """
import importlib, os, sys, traceback
import numpy, torch  # noqa: F401  (not mapping: loaded once, shared by the forked children)
failed = 0
for name in sys.argv[1:]:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException:
            print(f"import {name} failed:", traceback.format_exc(), sep="\\n", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
sys.exit(1 if failed else 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the isolated imports fork one child per module")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", ISOLATED_IMPORTS, *module_names()], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]


def test_the_isolated_imports_report_a_module_that_fails():
    done = subprocess.run([sys.executable, "-c", ISOLATED_IMPORTS, "mapping.checks", "mapping.no_such_module"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1 and "import mapping.no_such_module failed" in done.stderr
    assert "import mapping.checks failed" not in done.stderr
