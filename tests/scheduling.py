"""How ``make test`` hands files to its workers: whole files, and one worker kept for the tests that start nothing.

Why: the integration files start services and then wait on them (a replica loading, a broker outage held for
30 s, a node declared dead), so two workers running them left the 2-core machine idle about an eighth of the
time, while the unit tests, pure CPU, waited for the end of the run. A third worker that takes only files under
``tests/unit`` fills those gaps; it runs at the lowest priority (``tests/conftest.py`` lowers a worker's priority
at its first test that starts no service), so it takes idle CPU rather than the integration tests' CPU.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadFileScheduling

UNIT_FILES = "tests/unit/"


class UnitLaneScheduling(LoadFileScheduling):
    """``--dist loadfile`` in collection order, except that with three workers or more the last one (the unit
    lane) is given only files under :data:`UNIT_FILES`, the first of them still queued; it stops when none is
    left. The other workers take the queue in order (integration files first, see ``tests/conftest.py``)."""

    def _assign_work_unit(self, node: Any) -> None:
        if len(self.nodes) < 3 or node is not max(self.nodes, key=_worker_number):
            super()._assign_work_unit(node)
            return
        unit_file = next((scope for scope in self.workqueue if scope.startswith(UNIT_FILES)), None)
        if unit_file is None:
            node.shutdown()  # it finishes what it holds, then stops
            return
        self.workqueue.move_to_end(unit_file, last=False)
        super()._assign_work_unit(node)


def _worker_number(node: Any) -> int:
    """3 for the worker ``gw3``."""
    return int(node.gateway.id.removeprefix("gw"))
