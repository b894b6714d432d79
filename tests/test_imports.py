"""The import graph of `eva/`, read statically (ast): no cycle, and the models never import a command.

Every `import` / `from ... import` anywhere in a module counts: at module level, inside functions and
under `TYPE_CHECKING`, relative ones resolved against the module's package. An edge goes to the module
a statement names (`from eva.models import tiny` -> `eva.demo.tiny`; `from eva.config import
value_at` -> `eva.config`) and to each package above it that the import runs (`eva/models/__init__.py`
for `import eva.demo.tiny`), except the importer's own packages, which already run before it.

A CLI module is one with an `if __name__ == "__main__":` block (or a `__main__.py`): a command that
builds on the library, such as `python -m eva.weights`. The library must not build on a command.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def project_modules(root: Path, package: str = "eva") -> dict[str, Path]:
    """Dotted name -> file, for every .py under `root/package` (a package by its __init__.py)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, modules: dict[str, Path]) -> set[str]:
    """The project modules the import statements of `module` name, relative imports resolved:
    `from X import Y` names X.Y where that is a module, else X (Y is a name inside it)."""
    path = modules[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            names += [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for name in names:
        while name and name not in modules:  # `import eva.config.x` of a missing x: eva.config runs
            name = name.rpartition(".")[0]
        if name:  # else outside the project
            found.add(name)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules importing it runs: those it names, and the packages above them
    but its own (their __init__.py runs first; its own packages' have run before it)."""
    graph: dict[str, set[str]] = {}
    for module in modules:
        targets: set[str] = set()
        for name in imported_modules(module, modules):
            parts = name.split(".")
            targets |= {
                package
                for package in (".".join(parts[:depth]) for depth in range(1, len(parts)))
                if not module.startswith(f"{package}.")
            }
            targets.add(name)
        graph[module] = targets - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected component of more than one module, or a self-loop."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is a few hundred nodes deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's first module back to itself, inside the component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    return [*paths[node], start]
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start} in {sorted(component)}")


def is_cli(path: Path) -> bool:
    """A `__main__.py`, or a module with an `if __name__ == "__main__":` block."""
    if path.name == "__main__.py":
        return True
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        test = node.test if isinstance(node, ast.If) else None
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id == "__name__"
            and len(test.comparators) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value == "__main__"
        ):
            return True
    return False


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, list[str]]:
    """Every module importing `start` runs, with the chain of imports that gets there."""
    chains = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for nxt in sorted(graph[node]):
            if nxt not in chains:
                chains[nxt] = [*chains[node], nxt]
                frontier.append(nxt)
    return chains


def _arrows(chain: list[str]) -> str:
    return " -> ".join(chain)


def test_eva_has_no_import_cycle() -> None:
    graph = import_graph(project_modules(REPO))
    found = cycles(graph)
    assert not found, "import cycles in eva/:\n" + "\n".join(_arrows(cycle) for cycle in found)


def test_the_models_never_import_a_command() -> None:
    """No module of `eva.models` imports a CLI module, directly or through other modules."""
    modules = project_modules(REPO)
    graph = import_graph(modules)
    commands = {name for name, path in modules.items() if is_cli(path)}
    assert "eva.weights" in commands  # the definition finds the commands there are
    models = [name for name in modules if name == "eva.models" or name.startswith("eva.models.")]
    assert models
    bad = [
        _arrows(chain)
        for model in models
        for target, chain in reachable(graph, model).items()
        if target in commands
    ]
    assert not bad, "eva.models imports a CLI module:\n" + "\n".join(bad)


def test_the_walk_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Relative, function-level, `from package import submodule` and package __init__ edges all count."""
    files = {
        "eva/__init__.py": "",
        "eva/a/__init__.py": "from .b import thing\n",
        "eva/a/b.py": "import json\n\ndef late():\n    from ..c import go\n",
        "eva/c.py": "from eva.d import tool\n",
        "eva/d/__init__.py": "",
        "eva/d/tool.py": "import eva.a.b\n",
        "eva/cli.py": "import sys\n\nif __name__ == '__main__':\n    sys.exit(0)\n",
        "eva/e.py": "def main():\n    from eva import cli\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    modules = project_modules(tmp_path)
    graph = import_graph(modules)
    assert graph["eva.a"] == {"eva.a.b"}
    assert graph["eva.a.b"] == {"eva.c"}  # function-level, relative; json is outside the project
    assert graph["eva.c"] == {"eva.d", "eva.d.tool"}  # the package's __init__ runs first
    assert graph["eva.d.tool"] == {"eva.a", "eva.a.b"}
    assert graph["eva.e"] == {"eva.cli"}
    assert cycles(graph) == [["eva.a", "eva.a.b", "eva.c", "eva.d.tool", "eva.a"]]
    assert {name for name, path in modules.items() if is_cli(path)} == {"eva.cli"}
    assert reachable(graph, "eva.e")["eva.cli"] == ["eva.e", "eva.cli"]
