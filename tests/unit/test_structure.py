"""The package's structure: no import cycle, and none dodged.

Every import counts, at module level or inside a function: an import inside a function
may keep a heavy library off a command's start-up, never break a cycle. A cycle hidden
behind `TYPE_CHECKING` or a module `__getattr__` counts as a cycle too, so neither is used.
"""

from __future__ import annotations

import ast
from pathlib import Path

import icu_unlearn

ROOT = Path(icu_unlearn.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["icu_unlearn", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module's imports of other modules of the package (`from . import x` names
    the submodule x where there is one)."""
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = _imports(_modules())
    assert graph["icu_unlearn.train"] >= {"icu_unlearn.run_setup", "icu_unlearn.run_dir"}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_cycle_is_dodged():
    for name, path in _modules().items():
        tree = ast.parse(path.read_text())
        assert "TYPE_CHECKING" not in path.read_text(), name
        module_functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert "__getattr__" not in module_functions, name
