"""What each partition of the frames topic has committed, and the commit of what finished since.

Why one place: a commit tells the next reader of a partition two things, where to resume (past the highest
contiguous finished offset, :class:`~services.frame_path.offsets.OffsetTracker`) and which records above that
point already have a dead letter (the ledger in the commit's metadata, :mod:`services.frame_path.letter_ledger`).
The ingest loop commits as frames finish and the dead-letter sender as it announces and acknowledges letters;
both go through :meth:`CommitLedger.commit`, so each commit carries both, and nothing is committed twice.
"""

from __future__ import annotations

import logging
from collections import Counter

from services.frame_path.kafka_reader import FramesReader
from services.frame_path.letter_ledger import PartitionLedger
from services.frame_path.metrics import PipelineMetrics
from services.frame_path.offsets import OffsetTracker

log = logging.getLogger(__name__)


class CommitLedger:
    """Finished offsets, dead-letter ledgers and what the broker holds, per partition, for one ingest worker.

    Args:
        name: the worker's name, shown in logs.
        counts: the worker's counters (``commit_rewinds`` is counted here).
        metrics: where to report; ``None`` outside Ray.
    """

    def __init__(self, name: str, counts: Counter[str], metrics: PipelineMetrics | None) -> None:
        self.name = name
        self.counts = counts
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.committed: dict[int, int] = {}
        # Dead letters not yet below a commit point, per partition. Kept across loop restarts (and seeded from the
        # commit metadata on connect), so a re-read record is finished without a second dead letter.
        self.letters: dict[int, PartitionLedger] = {}
        self._metadata: dict[int, str] = {}

    def restart(self) -> None:
        """A new loop starts clean: offsets of the old loop's cancelled tasks would otherwise stay pending forever,
        and the new consumer re-reads them from the committed offsets."""
        self.tracker = OffsetTracker()
        self._metadata = {}

    def resume(self, partition: int, offset: int, metadata: str) -> None:
        """What the broker holds for ``partition`` when a loop connects: its committed offset and metadata.

        Known from the start, not only after this loop's first commit of the partition: a partition taken over
        from another reader (a rebalance, a restart) that stays idle is never committed again, and its lag and
        position must still be measured from where the group stands, not from offset 0.
        """
        self.committed[partition] = offset
        self._metadata[partition] = metadata
        self.tracker.mark_committed({partition: offset})

    def ledger(self, partition: int) -> PartitionLedger:
        """``partition``'s dead-letter ledger (created empty)."""
        return self.letters.setdefault(partition, PartitionLedger())

    def lettered(self, partition: int, offset: int) -> bool:
        """Whether the broker has acknowledged a dead letter for ``offset`` of ``partition``."""
        return offset in self.letters.get(partition, ())

    def reset(self, partition: int) -> None:
        """``partition``'s position moved (an out-of-range reset): its pending offsets and ledger name other
        records now."""
        self.tracker.reset(partition)
        self.letters.pop(partition, None)

    async def commit(self, reader: FramesReader) -> bool:
        """Commit finished offsets and changed ledgers; ``False`` if the broker refused (retried next time)."""
        if not reader.connected:
            return False
        moved = self.tracker.committable()
        offsets: dict[int, tuple[int, str]] = {}
        for partition in set(moved) | set(self.letters):
            offset = moved.get(partition, self.committed.get(partition))
            if offset is None:
                continue
            metadata = self.letters[partition].metadata(offset) if partition in self.letters else ""
            if partition in moved or metadata != self._metadata.get(partition, ""):
                offsets[partition] = (offset, metadata)
        if not offsets:
            return True
        try:
            await reader.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a failed commit is retried with the next one
            log.warning("%s: commit failed (%s); will retry", self.name, exc)
            return False
        for partition, (offset, metadata) in offsets.items():
            self._note(partition, offset, metadata)
        return True

    async def commit_position(self, reader: FramesReader, partition: int, offset: int) -> None:
        """Commit ``offset`` for ``partition`` with no ledger (a reset position), so the group's position is
        repaired even if nothing follows; a failure is left to the next commit."""
        try:
            await reader.commit({partition: (offset, "")})
        except Exception as exc:  # noqa: BLE001 - the next read's commit moves it anyway
            log.warning("%s: commit of reset position failed (%s)", self.name, exc)
            return
        self._note(partition, offset, "")

    def _note(self, partition: int, offset: int, metadata: str) -> None:
        """What the broker now holds for ``partition``; a commit below the previous one (only after an
        out-of-range reset to an earlier offset) is counted as a rewind."""
        previous = self.committed.get(partition)
        if previous is not None and offset < previous:
            self.counts["commit_rewinds"] += 1
            if self.metrics is not None:
                self.metrics.commit_rewound(partition)
        self.committed[partition] = offset
        self._metadata[partition] = metadata
        self.tracker.mark_committed({partition: offset})
