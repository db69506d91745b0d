"""The frames topic as one ingest loop reads it: a kafka-python consumer of fixed partitions, on a thread of its own.

Why a thread of its own: kafka-python's consumer is not thread-safe, and its calls block; the ingest loop
(:mod:`services.frame_path.ingest_loop`) awaits each call here while its event loop goes on. Partitions are
``assign()``-ed, never balanced by the broker's group protocol (:mod:`services.frame_path.supervisor` decides who
reads what), and the consumer never resets a position silently (``auto_offset_reset="none"``): the loop applies
``ingest.on_offset_out_of_range`` itself. What the client cannot parse is found here, one partition at a time, by
a probe consumer (:meth:`FramesReader.unparseable`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from services.config import ZsadConfig

T = TypeVar("T")

PROBE_TIMEOUT_S = 5.0  # longest wait for one record while looking for a record the client cannot parse


@dataclasses.dataclass(frozen=True)
class UnreadRecord:
    """What is known of a record the Kafka client could not parse: where it is, nothing of its content.

    Its bytes stay in the frames topic at the offset the dead letter names (Kafka needs a key or a value, so the
    letter carries an empty key).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None = b""
    value: bytes | None = None
    headers: list[tuple[str, bytes]] = dataclasses.field(default_factory=list)


def is_parse_error(exc: BaseException) -> bool:
    """Whether kafka-python raised ``exc`` because it could not parse a record (not the broker, not the network)."""
    from kafka.consumer.fetcher import RecordTooLargeError
    from kafka.errors import CorruptRecordError

    return isinstance(exc, CorruptRecordError | RecordTooLargeError)


class FramesReader:
    """The consumer of ``partitions`` of the frames topic under the consumer group, opened by :meth:`connect`.

    Args:
        config: the system configuration (Kafka).
        partitions: the partitions of the frames topic to read.
        name: the reader's client id suffix, shown in logs.
        fetch_bytes: the most bytes fetched from one partition at once (a whole record, with its letter's headers).
    """

    def __init__(self, config: ZsadConfig, partitions: list[int], name: str, fetch_bytes: int) -> None:
        self.config = config
        self.partitions = sorted(partitions)
        self.name = name
        self.fetch_bytes = fetch_bytes
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-kafka")
        self._consumer: Any = None

    async def call(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking Kafka call on the reader's thread (one at a time, in order)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, lambda: call(*args, **kwargs))

    async def connect(self) -> dict[int, tuple[int, str]]:
        """Open the consumer at each partition's committed offset (a new group at the log's start).

        Returns:
            ``{partition: (committed offset, commit metadata)}`` of the partitions the group has committed.
        """
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        kafka = self.config.kafka

        def connect() -> tuple[Any, dict[int, tuple[int, str]]]:
            consumer = KafkaConsumer(
                **kafka.reader_options(self.name),
                group_id=kafka.group_id,
                # No silent resets: a position outside the log raises, and the loop applies the policy.
                auto_offset_reset="none",
                fetch_max_bytes=kafka.receive_message_max_bytes,
                max_partition_fetch_bytes=self.fetch_bytes,
            )
            partitions = [TopicPartition(kafka.frames_topic, partition) for partition in self.partitions]
            consumer.assign(partitions)
            resumed: dict[int, tuple[int, str]] = {}
            for partition in partitions:
                committed = consumer.committed(partition, metadata=True)
                if committed is None or committed.offset < 0:
                    consumer.seek_to_beginning(partition)  # a new group reads the whole retained log
                    continue
                consumer.seek(partition, committed.offset)
                resumed[partition.partition] = (committed.offset, committed.metadata or "")
            return consumer, resumed

        self._consumer, resumed = await self.call(connect)
        return resumed

    @property
    def connected(self) -> bool:
        """Whether a consumer is open (between :meth:`connect` and :meth:`close`)."""
        return self._consumer is not None

    def topic_partition(self, partition: int) -> Any:
        """``partition`` of the frames topic as kafka-python names it."""
        from kafka.structs import TopicPartition

        return TopicPartition(self.config.kafka.frames_topic, partition)

    def assignment(self) -> list[Any]:
        """The partitions the consumer reads (empty before :meth:`connect`)."""
        return list(self._consumer.assignment()) if self._consumer is not None else []

    async def poll(self, max_records: int) -> dict[Any, list[Any]]:
        """The records ready now, at most ``max_records``; never waits (the loop does its own waiting).

        Raises:
            whatever kafka-python raises: positions outside the log, records it cannot parse, the broker away.
        """
        return await self.call(self._consumer.poll, timeout_ms=0, max_records=max_records)

    async def pause(self, *partitions: Any) -> None:
        """Stop fetching ``partitions`` (polls go on and keep the consumer alive)."""
        await self.call(self._consumer.pause, *partitions)

    async def resume(self, *partitions: Any) -> None:
        """Fetch ``partitions`` again."""
        await self.call(self._consumer.resume, *partitions)

    async def seek(self, partition: Any, offset: int) -> None:
        """Read ``partition`` from ``offset`` next."""
        await self.call(self._consumer.seek, partition, offset)

    async def position(self, partition: Any) -> int:
        """The offset ``partition`` is read from next."""
        return int(await self.call(self._consumer.position, partition))

    async def log_bounds(self, partition: Any) -> tuple[int, int]:
        """``(first offset, end offset)`` of ``partition``'s log."""
        begin = await self.call(self._consumer.beginning_offsets, [partition], timeout_ms=5000)
        end = await self.call(self._consumer.end_offsets, [partition], timeout_ms=5000)
        return int(begin[partition]), int(end[partition])

    async def log_ends(self) -> dict[int, int]:
        """``{partition: end offset}`` of every assigned partition."""
        ends = await self.call(self._consumer.end_offsets, self.assignment(), timeout_ms=5000)
        return {tp.partition: int(end) for tp, end in ends.items()}

    async def topic_ends(self, topic: str) -> dict[int, int]:
        """Where each partition of ``topic`` ends (empty while the topic does not exist yet)."""
        from kafka.structs import TopicPartition

        def ends() -> dict[int, int]:
            partitions = self._consumer.partitions_for_topic(topic) or set()
            if not partitions:
                return {}
            found = self._consumer.end_offsets([TopicPartition(topic, p) for p in sorted(partitions)], timeout_ms=5000)
            return {tp.partition: int(end) for tp, end in found.items()}

        return await self.call(ends)

    async def commit(self, offsets: dict[int, tuple[int, str]]) -> None:
        """Commit ``{partition: (next offset, metadata)}`` under the consumer group.

        Raises:
            whatever kafka-python raises when the broker refuses or is away (the caller retries).
        """
        from kafka.structs import OffsetAndMetadata

        request = {self.topic_partition(p): OffsetAndMetadata(offset, metadata, -1)
                   for p, (offset, metadata) in offsets.items()}  # fmt: skip
        await self.call(self._consumer.commit, request)

    async def unparseable(self, partitions: list[Any]) -> list[tuple[Any, int, BaseException]]:
        """The partitions among ``partitions`` whose next record the client cannot parse: ``(partition, offset,
        the error)``.

        kafka-python raises from ``poll()`` without saying which partition failed, and a second poll at the same
        position does not raise again but spins inside the client for ever. So the consumer is not polled: a
        probe consumer reads one record from each partition's position, and a partition whose probe fails the
        same way holds the bad record there.
        """
        found = []
        for tp in sorted(partitions, key=lambda tp: tp.partition):
            position = await self.position(tp)
            failure = await asyncio.get_running_loop().run_in_executor(None, self._probe, tp, position)
            if failure is not None:
                found.append((tp, position, failure))
        return found

    def _probe(self, tp: Any, offset: int) -> BaseException | None:
        """Read the record at ``offset`` of ``tp`` with a fresh consumer; the parse error it raises, if any."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        kafka = self.config.kafka
        probe = KafkaConsumer(**kafka.reader_options(f"{self.name}-probe"), auto_offset_reset="none",
                              max_partition_fetch_bytes=self.fetch_bytes)  # fmt: skip
        try:
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    if probe.poll(timeout_ms=200, max_records=1):
                        return None
                except Exception as exc:  # noqa: BLE001 - what is being looked for; other Kafka errors: not this
                    if isinstance(exc, KafkaError) and not is_parse_error(exc):
                        return None
                    return exc
            return None
        finally:
            probe.close()

    async def close(self) -> None:
        """Close the consumer (best effort); :meth:`connect` opens a new one."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await self.call(consumer.close)
