"""Processes of the tests' own making, found from ``/proc``.

Why not Ray's state API: it is served by the dashboard, which the session's Ray runs without
(``tests/integration/conftest.py``). Why the process tree: the session's Ray head is a child of the test
process, so its actors are the test process's descendants, and another test worker's cluster on the same
machine is never among them.
"""

from __future__ import annotations

import os
from pathlib import Path


def _parents() -> dict[int, tuple[int, str]]:
    """Every process's (parent pid, state letter)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            found[int(entry)] = (int(fields[1]), fields[0])
    return found


def descendants(root: int, parents: dict[int, tuple[int, str]] | None = None) -> set[int]:
    """``root`` and every process below it (in ``parents``, a scan of ``/proc`` by default)."""
    parents = _parents() if parents is None else parents
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, (parent, _) in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def ray_actor_pids(title: str) -> list[int]:
    """Live processes of this test process's Ray whose title is ``ray::<title>`` (Ray appends ``.<method>``
    while one runs), e.g. ``IngestActor`` or ``ServeReplica:<app>:<deployment>``."""
    states = _parents()  # one scan of /proc for the tree and the states
    found = []
    for pid in descendants(os.getpid(), states):
        if states.get(pid, (0, "Z"))[1] in "ZX":  # exited, not yet reaped
            continue
        try:
            name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
        except OSError:
            continue
        if name == f"ray::{title}" or name.startswith((f"ray::{title}.", f"ray::{title} ")):
            found.append(pid)
    return sorted(found)
