"""The layers of ARCHITECTURE.md, held by reading every import (top-level and inside functions).

- Nothing below the application (``suite.app``) imports it.
- Only the commands import the report layer (``suite.reports``).
- Plugins (methods, tasks, kernels) and the result store import neither, and method and task
  plugins do not import each other's packages: they meet through the registry.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

FOLDERS = {"suite": "suite", "methods": "suite.methods", "tasks": "suite.tasks", "kernels": "suite.kernels",
           "results": "suite.results", "reports": "suite.reports"}


def module_name(path: Path) -> str:
    relative = path.relative_to(REPO).with_suffix("")
    parts = [FOLDERS[relative.parts[0]], *relative.parts[1:]]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every ``suite`` module ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in found if name == "suite" or name.startswith("suite.")}


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            module = module_name(path)
            graph[module] = imports_of(path, module)
    return graph


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(graph: dict[str, set[str]], importer, imported: str) -> list[str]:
    return sorted(f"{m} imports {t}" for m, targets in graph.items() if importer(m)
                  for t in targets if within(t, imported))


def test_the_graph_is_read():
    graph = import_graph()
    assert "suite.app.commands.run" in graph and "suite.reports.leaderboard" in graph
    assert any(within(t, "suite.reports") for t in graph["suite.app.commands.compare"])  # lazy imports count


def test_nothing_below_the_application_imports_it():
    graph = import_graph()
    assert not offenders(graph, lambda m: not within(m, "suite.app") and m != "suite.__main__", "suite.app")


def test_only_the_commands_import_the_reports():
    graph = import_graph()
    outside = lambda m: not within(m, "suite.reports") and not within(m, "suite.app.commands")  # noqa: E731
    assert not offenders(graph, outside, "suite.reports")


def test_plugins_and_the_store_sit_on_the_contracts_only():
    graph = import_graph()
    lower = ("suite.methods", "suite.tasks", "suite.kernels", "suite.results")
    for package in lower:
        for upper in ("suite.app", "suite.reports"):
            assert not offenders(graph, lambda m, p=package: within(m, p), upper)
    assert not offenders(graph, lambda m: within(m, "suite.methods"), "suite.tasks")
    assert not offenders(graph, lambda m: within(m, "suite.tasks"), "suite.methods")
