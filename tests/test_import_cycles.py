"""No import cycle inside any distribution (DESIGN.md section 6, issue 14).

For every distribution folder (``packages/*`` and ``plugins/*`` with a ``pyproject.toml`` and
a ``src/``) this builds the import graph of its own modules from the source files with
``ast`` (nothing needs to be installed) and fails on any cycle, listing its modules and one
concrete loop through them with file and line of each import.

What counts as an import (every ``import``/``from`` statement, at module level or inside a
function, absolute or relative):

* ``import a.b.c`` imports the module ``a.b.c``.
* ``from x import y`` imports the module ``x.y`` when that is a module of the distribution
  (``from rlblocks.core import hookspecs``: Python imports the submodule and needs nothing
  else of ``x``), and ``x`` itself otherwise (``y`` is an attribute of ``x``: ``x``'s
  ``__init__`` must have run, so ``from rlblocks.envs import GymEnv`` inside a module that
  ``rlblocks/envs/__init__.py`` imports is a cycle).
* Imports in the body of ``if TYPE_CHECKING:`` never run, so they are left out (those in
  its ``else:`` branch run, and count).
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTRIBUTION_FOLDERS = sorted(
    p.parent
    for p in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("plugins/*/pyproject.toml")]
    if (p.parent / "src").is_dir()
)


@dataclass(frozen=True)
class ImportSite:
    """Where an import statement is: to point at the line to change."""

    path: Path
    line: int

    def __str__(self) -> str:
        try:
            shown = self.path.relative_to(ROOT)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"


# importer -> imported module -> the statements that import it
ImportGraph = dict[str, dict[str, list[ImportSite]]]


def module_files(src: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``src`` (a package's
    ``__init__.py`` is the package's own name)."""
    out = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING`` (any module prefix)."""
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` that can run, at any depth (functions included)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            # The body never runs; the test itself and the else branch do.
            stack.append(node.test)
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _resolve_relative(node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
    """The absolute module a ``from`` import names (``None``: it climbs above the top)."""
    if not node.level:
        return node.module or ""
    package = name if is_package else name.rpartition(".")[0]
    parts = package.split(".") if package else []
    if node.level - 1 > len(parts):
        return None
    base = parts[: len(parts) - (node.level - 1)]
    if node.module:
        base.append(node.module)
    return ".".join(base)


def imported_modules(
    path: Path, name: str, modules: Mapping[str, Path]
) -> dict[str, list[ImportSite]]:
    """The modules among ``modules`` that the file ``path`` (module ``name``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_package = path.name == "__init__.py"
    found: dict[str, list[ImportSite]] = {}

    def add(target: str, node: ast.stmt) -> None:
        if target in modules:
            found.setdefault(target, []).append(ImportSite(path, node.lineno))

    for node in runtime_imports(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
            continue
        base = _resolve_relative(node, name, is_package)
        if base is None:
            continue
        reads_attribute = False
        for alias in node.names:
            submodule = f"{base}.{alias.name}" if base else alias.name
            if alias.name != "*" and submodule in modules:
                add(submodule, node)
            else:
                reads_attribute = True
        if reads_attribute:
            add(base, node)
    return found


def import_graph(src: Path) -> ImportGraph:
    """The import graph of the modules under ``src``, restricted to those modules."""
    modules = module_files(src)
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def find_cycles(graph: Mapping[str, Mapping[str, object] | set[str]]) -> list[list[str]]:
    """Every import cycle of ``graph``: strongly connected components of more than one
    module, and modules that import themselves; each sorted, the list sorted.

    Tarjan's algorithm, iterative so that deep graphs cannot hit the recursion limit.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in graph:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(graph[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph[node]:
                        cycles.append(sorted(component))
    return sorted(cycles)


def describe_cycle(graph: ImportGraph, cycle: list[str]) -> str:
    """One shortest loop through the cycle's first module, with the import of every step."""
    start, members = cycle[0], set(cycle)
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if start in graph[node]:
            previous[start] = node
            break
        for succ in sorted(graph[node]):
            if succ in members and succ not in previous:
                previous[succ] = node
                queue.append(succ)
    path = [start]
    while len(path) == 1 or path[-1] != start:
        path.append(previous[path[-1]])
    path.reverse()
    steps = [path[0]] + [
        f"{path[i + 1]} ({graph[path[i]][path[i + 1]][0]})" for i in range(len(path) - 1)
    ]
    return f"cycle among {', '.join(cycle)}:\n    " + "\n    -> ".join(steps)


@pytest.mark.parametrize("folder", DISTRIBUTION_FOLDERS, ids=lambda p: p.name)
def test_no_import_cycle_in_distribution(folder: Path) -> None:
    graph = import_graph(folder / "src")
    assert graph, f"{folder.relative_to(ROOT)}/src holds no module"
    cycles = find_cycles(graph)
    assert not cycles, f"{folder.relative_to(ROOT)} has {len(cycles)} import cycle(s):\n" + (
        "\n".join(describe_cycle(graph, cycle) for cycle in cycles)
    )


def test_the_distributions_are_found() -> None:
    names = {folder.name for folder in DISTRIBUTION_FOLDERS}
    assert {"rlcore", "rlenvs", "rlbuffers", "rlobjectives", "rlcollectors"} <= names


# -- the cycle finder itself --------------------------------------------------------------


def test_find_cycles_reports_a_cycle_and_only_its_modules() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_find_cycles_passes_a_dag() -> None:
    graph = {"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}
    assert find_cycles(graph) == []


def test_find_cycles_reports_a_self_import_and_separate_cycles() -> None:
    graph = {"a": {"a"}, "b": {"c"}, "c": {"b"}, "x": {"y"}, "y": {"x"}}
    assert find_cycles(graph) == [["a"], ["b", "c"], ["x", "y"]]


def test_find_cycles_handles_a_long_chain() -> None:
    # Deeper than the default recursion limit: the finder must not recurse per module.
    n = 5000
    graph = {f"m{i}": {f"m{i + 1}"} for i in range(n)}
    graph[f"m{n}"] = {"m0"}
    (cycle,) = find_cycles(graph)
    assert len(cycle) == n + 1


def write_tree(src: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = src / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_graph_ignores_type_checking_imports_and_submodule_imports(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            # `ns` is a namespace (no __init__), as `rlblocks` is.
            "ns/pkg/__init__.py": "from . import _a\nfrom ns.pkg._b import B\n",
            "ns/pkg/_a.py": (
                "from typing import TYPE_CHECKING\n"
                "import typing\n"
                "if TYPE_CHECKING:\n"
                "    from ns.pkg import B\n"
                "if typing.TYPE_CHECKING:\n"
                "    from . import _b\n"
            ),
            "ns/pkg/_b.py": "from ns.pkg import _c\nB = 1\n",
            "ns/pkg/_c.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert set(graph) == {"ns.pkg", "ns.pkg._a", "ns.pkg._b", "ns.pkg._c"}
    assert set(graph["ns.pkg"]) == {"ns.pkg._a", "ns.pkg._b"}  # no self-import
    assert graph["ns.pkg._a"] == {}
    assert set(graph["ns.pkg._b"]) == {"ns.pkg._c"}  # a submodule, not the package
    assert find_cycles(graph) == []


def test_graph_finds_a_function_level_import_of_the_package_init(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "ns/pkg/__init__.py": "from ns.pkg._a import A\nfrom ns.pkg.sub import S\n",
            "ns/pkg/_a.py": "class A:\n    def make(self):\n        from ns.pkg import S\n",
            "ns/pkg/sub/__init__.py": "from ._s import S\n",
            "ns/pkg/sub/_s.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n"
                "    pass\n"
                "else:\n"
                "    from .. import _z\n"  # the else branch runs: a real import
                "S = 1\n"
            ),
            "ns/pkg/_z.py": "",
        },
    )
    graph = import_graph(tmp_path)
    assert [site.line for site in graph["ns.pkg._a"]["ns.pkg"]] == [3]
    assert set(graph["ns.pkg.sub._s"]) == {"ns.pkg._z"}
    assert find_cycles(graph) == [["ns.pkg", "ns.pkg._a"]]
    message = describe_cycle(graph, ["ns.pkg", "ns.pkg._a"])
    assert "ns/pkg/_a.py:3" in message and "ns/pkg/__init__.py:1" in message


def test_graph_counts_absolute_module_imports_and_self_imports(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "ns/pkg/__init__.py": "",
            "ns/pkg/_a.py": "import ns.pkg._b\nimport os\n",
            "ns/pkg/_b.py": "def f():\n    import ns.pkg._a as a\n    return a\n",
            "ns/pkg/_c.py": "from ns.pkg._c import thing\nthing = 1\n",
        },
    )
    graph = import_graph(tmp_path)
    assert find_cycles(graph) == [["ns.pkg._a", "ns.pkg._b"], ["ns.pkg._c"]]
    message = describe_cycle(graph, ["ns.pkg._c"])
    assert "-> ns.pkg._c (" in message and message.endswith("ns/pkg/_c.py:1)")
