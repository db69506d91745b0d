"""Group the output of ``pytest --durations=0`` by test file: the table of docs/testing.md.

Usage: ``python -m pytest -q --durations=0 --durations-min=0 | tee log; python scripts/test_durations.py log``.
Why a script: the per-test list of pytest is ~2,900 lines; what a reader of the suite's cost needs is which files
(and which of their phases: set-up is where shared services start) hold the time.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from pathlib import Path

ROW = re.compile(r"^(?P<seconds>[\d.]+)s (?P<phase>setup|call|teardown)\s+(?P<node>\S+)")


def per_file(log: str) -> dict[str, dict[str, float]]:
    """Seconds of each phase (and the count of tests) per test file, from pytest's durations lines."""
    files: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for line in log.splitlines():
        if match := ROW.match(line):
            phases = files[match["node"].split("::")[0]]
            phases[match["phase"]] += float(match["seconds"])
            phases["tests"] += match["phase"] == "call"
    return files


def markdown(files: dict[str, dict[str, float]], top: int) -> str:
    """The ``top`` most expensive files as a markdown table, with the unit/integration totals under it."""
    ranked = sorted(files.items(), key=lambda item: -sum(v for k, v in item[1].items() if k != "tests"))
    lines = ["| file | tests | set-up s | call s | teardown s | total s |", "|---|---:|---:|---:|---:|---:|"]
    for name, phases in ranked[:top]:
        total = phases["setup"] + phases["call"] + phases["teardown"]
        lines.append(f"| `{name}` | {int(phases['tests'])} | {phases['setup']:.1f} | {phases['call']:.1f} "
                     f"| {phases['teardown']:.1f} | {total:.1f} |")
    for kind in ("integration", "unit"):
        chosen = [p for name, p in files.items() if f"/{kind}/" in f"/{name}"]
        seconds = sum(p["setup"] + p["call"] + p["teardown"] for p in chosen)
        lines.append(f"| all of tests/{kind} | {int(sum(p['tests'] for p in chosen))} | | | | {seconds:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="a saved pytest output with --durations=0 --durations-min=0")
    parser.add_argument("--top", type=int, default=20, help="how many files to list (default 20)")
    args = parser.parse_args()
    print(markdown(per_file(args.log.read_text()), args.top))


if __name__ == "__main__":
    main()
