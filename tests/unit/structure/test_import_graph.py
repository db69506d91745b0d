"""The project's import graph, read from the source with ``ast``: no module cycles, and ``zsad_core`` free of services.

The layers of ``services/`` are import-linter's contracts (pyproject.toml, run by ``make lint``).

Why from the source and not from ``sys.modules``: a function-level import (``from services.cli import ...``
inside a function) only shows up at run time when that function runs; the syntax tree has every import,
module-level and function-level alike, so a circle or an upward import cannot hide in a rarely taken branch.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("zsad_core", "services")
SERVICE_LIBRARIES = ("ray", "kafka", "redis")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name ``path`` imports, anywhere in the file.

    ``from x import y`` gives ``x.y``: the module ``x.y`` when there is one (a package's ``__init__`` runs first in
    either case, as it does for ``import x.y``, so that is not counted as an edge), else the name ``y`` of ``x``.
    """
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.update(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
    return names


@cache
def project_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (a name that is a class or function maps to its module)."""
    files = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    raw = {module: _imported_names(path, module) for module, path in files.items()}
    graph: dict[str, set[str]] = {}
    for module, names in raw.items():
        targets = set()
        for name in names:
            while name and name not in files:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


@cache
def external_imports() -> dict[str, set[str]]:
    """Project module -> the top-level names of everything it imports."""
    files = {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    return {module: {name.split(".")[0] for name in _imported_names(path, module)} for module, path in files.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a closed path), or None: a depth-first search that remembers the current path."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        pending = [iter(sorted(graph[start]))]
        while pending:
            successor = next(pending[-1], None)
            if successor is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
                continue
            if successor in on_path:
                return [*path[path.index(successor) :], successor]
            if successor in done or successor not in graph:
                continue
            path.append(successor)
            on_path.add(successor)
            pending.append(iter(sorted(graph[successor])))
    return None


def _importers_of(prefix: str, importers: str) -> dict[str, set[str]]:
    """Modules under ``importers`` -> the modules under ``prefix`` they import (only the offending ones)."""
    found = {
        module: {target for target in targets if _under(target, prefix)}
        for module, targets in project_graph().items()
        if _under(module, importers)
    }
    return {module: targets for module, targets in found.items() if targets}


def _under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_graph_sees_both_packages_and_function_level_imports() -> None:
    graph = project_graph()
    assert "zsad_core.methods.registry" in graph and "services.cli.main" in graph
    # cmd_train imports the training job only inside its handler (keeps `zsad --help` fast).
    assert "services.prompt_lifecycle.training_job" in graph["services.cli.cmd_train"]


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles() -> None:
    assert _find_cycle(project_graph()) is None


def test_zsad_core_imports_nothing_from_services() -> None:
    assert _importers_of("services", "zsad_core") == {}


@pytest.mark.parametrize("library", SERVICE_LIBRARIES)
def test_zsad_core_imports_no_service_library(library: str) -> None:
    offenders = sorted(module for module, names in external_imports().items()
                       if _under(module, "zsad_core") and library in names)  # fmt: skip
    assert offenders == []
