"""The package shows its architecture: the layer contract holds, no import cycles, small modules.

The contract itself is in pyproject.toml (`[tool.importlinter]`) and drawn in docs/architecture.md.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "llmrelay"
MAX_LINES = 500
MAX_TOP_LEVEL_MODULES = 12


def _modules() -> dict[str, Path]:
    found = {}
    for path in PKG.rglob("*.py"):
        if "recordings" in path.parts:
            continue
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every llmrelay module `name` imports, at module level or inside functions (a lazy import is
    still an edge); imports under `if TYPE_CHECKING:` are left out."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "llmrelay" and alias.name in modules:
                    edges.add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llmrelay":
                return
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                edges.add(sub if sub in modules else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    edges.discard(name)
    return {e for e in edges if e in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_function_level_imports_included():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert sum(len(v) for v in graph.values()) > 200  # the scan sees the real graph
    assert _cycles(graph) == []


def test_layer_contract_holds():
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.fail("lint-imports is not installed: it is part of the dev extra")
    env = {**os.environ, "PYTHONPATH": str(PKG.parent)}
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


def test_contract_names_every_subpackage_and_top_level_module():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    named = {m.strip("() ") for layer in layers for m in layer.split("|")}
    children = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    missing = {f"llmrelay.{c}" for c in children} - named
    assert not missing, f"not in the layer contract: {sorted(missing)}"


def test_modules_are_small_and_the_top_level_is_the_vocabulary():
    too_long = {name: n for name, path in _modules().items()
                if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not too_long, too_long
    top = [p.stem for p in PKG.glob("*.py") if p.stem != "__init__"]
    assert len(top) <= MAX_TOP_LEVEL_MODULES, sorted(top)


def test_every_subpackage_says_what_it_holds():
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.parent.name}/__init__.py needs a docstring"


def test_the_architecture_page_names_the_contract_layers():
    """docs/architecture.md draws the same layers as the contract (it must be kept true)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    page = (ROOT / "docs" / "architecture.md").read_text()
    for layer in layers:
        for module in layer.split("|"):
            leaf = module.strip("() ").rpartition(".")[2]
            assert f"{leaf}/" in page or f"{leaf}.py" in page, f"docs/architecture.md does not name {leaf}"
