"""A per-actor budget of decoded pixels, so concurrent decodes cannot multiply an actor's memory.

Why: a 200 KB PNG can decode to 64 Mpx (192 MB of RGB). Each ingest actor decodes on a small thread pool;
without a bound, every thread may hold such a frame at once, and a burst of them takes the actor to
gigabytes. A decode first takes its frame's pixel count from the budget and waits while other decodes hold
it. Waiters are served in arrival order, so a large frame is not starved by a stream of small ones, and a
frame larger than the whole budget is still decoded: alone, when it has the whole budget to itself.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Iterator


class DecodeBudget:
    """At most ``capacity`` decoded pixels held at once by the decodes that share this budget.

    Args:
        capacity: pixels; a decode of more pixels runs alone.

    Raises:
        ValueError: ``capacity`` is not positive.
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"a decode budget needs a positive capacity, got {capacity}")
        self.capacity = capacity
        self._held = 0
        self._queue: deque[object] = deque()
        self._changed = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget for the duration of the block, waiting first until they are free."""
        cost = min(max(pixels, 0), self.capacity)
        ticket = object()
        with self._changed:
            self._queue.append(ticket)
            self._changed.wait_for(lambda: self._queue[0] is ticket and self._held + cost <= self.capacity)
            self._queue.popleft()
            self._held += cost
            self._changed.notify_all()  # the next in line may fit too
        try:
            yield
        finally:
            with self._changed:
                self._held -= cost
                self._changed.notify_all()
