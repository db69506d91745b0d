"""How ``make test`` hands files to its workers: whole files, and one worker kept for the files that start no Ray.

Why: the integration files start services and then wait on them (a replica loading, a node declared dead), so two
workers running them left the 2-core machine idle about an eighth of the time, while the unit tests, pure CPU,
waited for the end of the run. A third worker, the lane, takes only the files that start no Ray: first the
gateway's (a broker, Redis and a camera simulator at most, and long waits: a broker outage held for 30 s), then
the unit tests, at the lowest priority (``tests/conftest.py`` lowers a worker's priority at its first test that
starts no service), so that they take idle CPU rather than the integration tests' CPU.
"""

from __future__ import annotations

from typing import Any

from xdist.scheduler import LoadFileScheduling

# The files that start no Ray, in the order the lane takes them (tests/integration/gateway/conftest.py refuses
# a Ray there). The gateway's first: a worker cannot get its normal priority back once it reaches the unit tests.
LANE_FILES = ("tests/integration/gateway/", "tests/unit/")


class LaneScheduling(LoadFileScheduling):
    """``--dist loadfile`` in collection order, except that with three workers or more the last one (the lane) is
    given only :data:`LANE_FILES`, the first queued of the first kind that is left; it stops when none is left.
    The other workers take the queue in order (integration files first, see ``tests/conftest.py``), including the
    lane's files it has not reached."""

    def _assign_work_unit(self, node: Any) -> None:
        if len(self.nodes) < 3 or node is not max(self.nodes, key=_worker_number):
            super()._assign_work_unit(node)
            return
        lane_file = next((scope for kind in LANE_FILES for scope in self.workqueue if scope.startswith(kind)), None)
        if lane_file is None:
            node.shutdown()  # it finishes what it holds, then stops
            return
        self.workqueue.move_to_end(lane_file, last=False)
        super()._assign_work_unit(node)


def _worker_number(node: Any) -> int:
    """3 for the worker ``gw3``."""
    return int(node.gateway.id.removeprefix("gw"))
