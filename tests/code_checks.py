"""Static checks of the project's code that CI runs through ``tests/test_code_quality.py``: import cycles between
the project's modules and functions over the length limit. Both read the source with ``ast``; nothing is imported.

    .venv/bin/python -m tests.code_checks      # prints every cycle and long function; exit 1 when there is one
"""

from __future__ import annotations

import ast
import sys
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Where the project's packages live (as pyproject.toml's [tool.setuptools.packages.find] where = [...]).
PACKAGE_ROOTS = (".", "plugins", "classifiers")
LIBRARY_FOLDERS = ("barkkit", "plugins", "classifiers")
MAX_FUNCTION_LINES = 70


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path``:``line``."""

    source: str
    target: str
    path: Path
    line: int


@dataclass(frozen=True)
class LongFunction:
    path: Path
    line: int
    name: str
    lines: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} {self.name} ({self.lines} lines)"


def project_modules(root: Path = REPO_ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages (``barkkit*`` under each of
    ``PACKAGE_ROOTS``); a package is named by its ``__init__.py``."""
    modules: dict[str, Path] = {}
    for base in (root / folder for folder in PACKAGE_ROOTS):
        for package in sorted(base.glob("barkkit*/__init__.py")):
            for path in sorted(package.parent.rglob("*.py")):
                parts = path.relative_to(base).with_suffix("").parts
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (any ``x.TYPE_CHECKING``)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at module level, in functions and classes, in try/except; not those
    that only a type checker reads (``if TYPE_CHECKING:``'s body, ``if not TYPE_CHECKING:``'s else)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if (isinstance(node, ast.If) and isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not)
                and _is_type_checking(node.test.operand)):
            stack.extend(node.body)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` names (relative ones resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _owner(name: str, modules: Mapping[str, Path]) -> str | None:
    """The project module that defines ``name`` (``a.b.c`` -> ``a.b`` when ``c`` is a name in ``a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def module_imports(module: str, modules: Mapping[str, Path]) -> list[Edge]:
    """The project modules ``module`` imports at run time, one edge per import (first line each).

    ``import a.b`` is an edge to ``a.b``, ``from a import b`` to the module ``a.b`` when there is one, else to
    ``a``; the implicit import of a parent package's ``__init__`` is not counted (every submodule has it).
    """
    path = modules[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    targets: list[tuple[str, int]] = []
    for node in _runtime_imports(tree):
        if isinstance(node, ast.Import):
            targets += [(alias.name, node.lineno) for alias in node.names]
            continue
        base = _absolute(node, module, path.name == "__init__.py")
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.append((submodule if submodule in modules else base, node.lineno))
    edges: dict[str, Edge] = {}
    for name, line in sorted(targets, key=lambda target: target[1]):
        owner = _owner(name, modules)
        if owner is not None and owner != module and owner not in edges:
            edges[owner] = Edge(module, owner, path, line)
    return list(edges.values())


def import_graph(root: Path = REPO_ROOT) -> dict[str, list[Edge]]:
    """Each project module -> the project modules it imports at run time."""
    modules = project_modules(root)
    return {module: module_imports(module, modules) for module in modules}


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The groups of two or more nodes that reach each other (Tarjan's algorithm, without recursion), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(graph.get(start, ())))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph.get(successor, ()))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
    return sorted(groups)


def _shortest_cycle(group: list[str], graph: Mapping[str, list[Edge]]) -> list[Edge]:
    """A shortest cycle through ``group[0]`` inside ``group`` (breadth-first), as the imports that make it."""
    members, start = set(group), group[0]
    came_by: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for edge in graph[node]:
            if edge.target == start:
                path = [edge]
                while path[0].source != start:
                    path.insert(0, came_by[path[0].source])
                return path
            if edge.target in members and edge.target not in came_by:
                came_by[edge.target] = edge
                queue.append(edge.target)
    raise AssertionError(f"{group} is not a cycle")  # a strongly connected group always has one


def import_cycles(root: Path = REPO_ROOT) -> list[str]:
    """One line per group of modules that import each other at run time, with a shortest cycle's import lines:
    ``a <-> b: a imports b (a.py:3), b imports a (b.py:9 ...)``. Empty when the imports run one way."""
    graph = import_graph(root)
    lines = []
    for group in strongly_connected({module: [edge.target for edge in edges] for module, edges in graph.items()}):
        steps = ", ".join(f"{edge.source} imports {edge.target} ({_shown(edge.path, root)}:{edge.line})"
                          for edge in _shortest_cycle(group, graph))
        lines.append(f"{' <-> '.join(group)}: {steps}")
    return lines


def long_functions(root: Path = REPO_ROOT, limit: int = MAX_FUNCTION_LINES) -> list[LongFunction]:
    """Functions and methods of the library (``LIBRARY_FOLDERS``) longer than ``limit`` lines, from ``def`` to
    their last line (decorators not counted; a nested function counts in its own right and in its parent's)."""
    found = []
    for folder in LIBRARY_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > limit:
                        found.append(LongFunction(_shown(path, root), node.lineno, node.name, lines))
    return sorted(found, key=lambda function: (str(function.path), function.line))


def _shown(path: Path, root: Path) -> Path:
    return path.relative_to(root) if path.is_relative_to(root) else path


def main() -> int:
    cycles, functions = import_cycles(), long_functions()
    for cycle in cycles:
        print(f"import cycle: {cycle}")
    for function in functions:
        print(f"over {MAX_FUNCTION_LINES} lines: {function}")
    print(f"{len(cycles)} import cycle(s), {len(functions)} function(s) over {MAX_FUNCTION_LINES} lines")
    return 1 if cycles or functions else 0


if __name__ == "__main__":
    sys.exit(main())
