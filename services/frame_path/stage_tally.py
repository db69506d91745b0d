"""How well a replica shares its vision forwards across cameras: a running tally of its image-stage forwards.

Why beside the metrics: Prometheus histograms show the distribution on the dashboard, but a replica's own
``describe()`` (the operator's ``zsad status``, the benchmarks) needs the plain totals without a metrics agent.
"""

from __future__ import annotations

import threading
from collections import Counter


class StageTally:
    """Image-stage forwards of the batches a replica scored since it started.

    ``groups`` counts the camera groups (one full vision forward each before stages were shared), so
    ``forwards / groups`` says how much sharing saved and ``frames / forwards`` is the mean vision batch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # batches and describe() run on different threads
        self.batches = 0
        self.groups = 0
        self.forwards = 0
        self.frames = 0
        self.forwards_per_batch: Counter[int] = Counter()

    def add(self, groups: int, forward_sizes: list[int]) -> None:
        """One batch: ``groups`` camera groups, one image-stage forward per entry of ``forward_sizes`` (its frames)."""
        with self._lock:
            self.batches += 1
            self.groups += groups
            self.forwards += len(forward_sizes)
            self.frames += sum(forward_sizes)
            self.forwards_per_batch[len(forward_sizes)] += 1

    def describe(self) -> dict[str, object]:
        """The totals, the mean vision batch, and how many batches ran 1, 2, ... image-stage forwards."""
        with self._lock:
            return {
                "batches": self.batches,
                "groups": self.groups,
                "forwards": self.forwards,
                "frames": self.frames,
                "mean_vision_batch": self.frames / self.forwards if self.forwards else 0.0,
                "forwards_per_batch": {str(count): n for count, n in sorted(self.forwards_per_batch.items())},
            }
