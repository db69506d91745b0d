"""Which Kafka offsets may be committed: the highest contiguous finished offset of each partition.

Why: frames of one partition finish out of order (batches, retries, dead letters), and committing offset
``n`` tells the broker that everything before ``n`` is done. Committing the largest finished offset would
lose the unfinished frames below it if the consumer died; committing only past the lowest unfinished one
keeps delivery at-least-once, and the idempotent Redis writes turn the re-deliveries into no-ops.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field


@dataclass
class _Partition:
    """One partition's bookkeeping; ``next_commit`` is the offset the broker should resume from."""

    next_commit: int | None = None
    committed: int | None = None
    last_started: int | None = None
    pending: set[int] = field(default_factory=set)
    done: list[int] = field(default_factory=list)  # a min-heap of finished offsets above next_commit
    generation: int = 0


class OffsetTracker:
    """Tracks started and finished offsets per partition and says what is safe to commit.

    Offsets of a partition must be started in increasing order (as a consumer reads them); they may finish
    in any order. Gaps in the offsets (compacted topics, transaction markers) are allowed: the commit point
    moves to just past the highest finished offset below which nothing is pending.
    """

    def __init__(self) -> None:
        self._partitions: dict[int, _Partition] = {}

    def start(self, partition: int, offset: int) -> int:
        """Record that ``offset`` was read and is being worked on; returns the partition's generation.

        Raises:
            ValueError: the offset is not above every offset started before on this partition (since the last
                :meth:`reset`).
        """
        state = self._partitions.setdefault(partition, _Partition())
        if state.last_started is not None and offset <= state.last_started:
            raise ValueError(f"partition {partition}: offset {offset} started after offset {state.last_started}")
        if state.next_commit is None:
            state.next_commit = offset
        state.last_started = offset
        state.pending.add(offset)
        return state.generation

    def finish(self, partition: int, offset: int, generation: int | None = None) -> bool:
        """Record that ``offset`` is done (stored, or dead-lettered); finishing twice is harmless.

        Args:
            generation: what :meth:`start` returned; a finish from before a :meth:`reset` of the partition is
                ignored, since the same offset may since have been read again (or name another record).

        Returns:
            Whether the finish counted (False: finished before, or of an older generation).

        Raises:
            KeyError: the offset was never started.
        """
        state = self._partitions.get(partition)
        if state is not None and generation is not None and generation != state.generation:
            return False
        if state is None or state.last_started is None or offset > state.last_started:
            raise KeyError(f"partition {partition}: offset {offset} was never started")
        if offset not in state.pending:
            return False  # finished before (a retried acknowledgement)
        state.pending.discard(offset)
        heapq.heappush(state.done, offset)
        lowest_pending = min(state.pending, default=None)
        while state.done and (lowest_pending is None or state.done[0] < lowest_pending):
            state.next_commit = heapq.heappop(state.done) + 1
        return True

    def reset(self, partition: int) -> None:
        """The consumer's position of ``partition`` was moved (an out-of-range reset): start over from its next read.

        Unfinished offsets are dropped, and finishes of offsets started before the reset no longer count, so
        the commit point follows the records read from the new position only.
        """
        old = self._partitions.get(partition)
        self._partitions[partition] = _Partition(committed=old.committed if old else None,
                                                 generation=(old.generation + 1) if old else 1)  # fmt: skip

    def in_flight(self, partition: int | None = None) -> int:
        """Started but unfinished offsets, of one partition or of all."""
        if partition is not None:
            state = self._partitions.get(partition)
            return len(state.pending) if state else 0
        return sum(len(state.pending) for state in self._partitions.values())

    def committable(self) -> dict[int, int]:
        """``{partition: next offset}`` for partitions whose commit point moved since the last commit."""
        return {
            partition: state.next_commit
            for partition, state in self._partitions.items()
            if state.next_commit is not None and state.next_commit != state.committed
        }

    def mark_committed(self, offsets: dict[int, int]) -> None:
        """Record a successful commit of ``{partition: next offset}`` (also of a partition not read yet: what
        the group had committed before this reader)."""
        for partition, offset in offsets.items():
            self._partitions.setdefault(partition, _Partition()).committed = offset

    def forget(self, partition: int) -> None:
        """Drop a partition that was taken away (its unfinished offsets will be re-read by the new owner)."""
        self._partitions.pop(partition, None)
