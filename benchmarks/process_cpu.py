"""CPU seconds spent by this benchmark's process tree, grouped by what each process is (Linux ``/proc`` only).

Why: on a machine whose cores the model saturates, any CPU another process takes comes out of the frames/s, so
"where did the time go" is answered by CPU seconds per process between two snapshots, not by wall time. Ray
names its worker processes ``ray::<Actor>`` (Serve replicas ``ray::ServeReplica:<app>:<Deployment>``), which is
the label used here; other processes are labelled by their executable's name.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while being read
        children.setdefault(parent, []).append(int(entry.name))
    return children


def _label(pid: int) -> str:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    first = raw[0].decode(errors="replace")
    if first.startswith("ray::"):
        return first.split()[0].split(".")[0]  # the actor, without the method it is running right now
    if pid == os.getpid():
        return "benchmark driver"
    return Path(first).name or "?"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S  # utime + stime of the process itself


def snapshot(root: int | None = None) -> Counter[str]:
    """CPU seconds so far of ``root`` (default: this process) and all its descendants, summed per label."""
    tree = _children()
    totals: Counter[str] = Counter()
    stack = [root or os.getpid()]
    while stack:
        pid = stack.pop()
        stack.extend(tree.get(pid, ()))
        try:
            totals[_label(pid)] += _cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            continue
    return totals


def spent(before: Counter[str], after: Counter[str]) -> dict[str, float]:
    """CPU seconds per label between two snapshots (processes that ended in between count what they had left)."""
    return {label: after[label] - before.get(label, 0.0) for label in after}
