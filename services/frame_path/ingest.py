"""Kafka ingest: read assigned partitions, decode frames, keep a bounded window in flight, commit what is done.

One :class:`IngestWorker` per Ray actor (:class:`IngestActor`). Its loop, all on one asyncio event loop:

* polls its partitions (``assign()``, never the broker's group protocol: :mod:`services.frame_path.supervisor` decides
  who reads what) on one dedicated thread, as kafka-python's consumer is not thread-safe;
* decodes each record on a small thread pool; a record that fails validation goes to the dead-letter topic
  with its reason, and counts as done once the broker has it;
* sends good frames to the Serve inspector through a ``DeploymentHandle``, at most ``max_in_flight`` at a
  time: when the window is full it pauses its partitions and keeps polling, and resumes as acks arrive;
* retries: a frame the model failed on is retried ``max_retries`` times, then dead-lettered; a failure of
  the infrastructure (a replica died, Redis unreachable) is not the frame's fault and is retried until it
  succeeds or the worker stops, so no frame is dead-lettered because a replica restarted;
* commits, per partition, only past the highest contiguous finished offset (:class:`OffsetTracker`), under
  the consumer group id, so a restarted actor resumes there and standard lag tools see the group. The commit
  also carries, as its metadata, the ledger of dead letters above the commit point (announced before the send,
  acknowledged after: :mod:`services.frame_path.letter_ledger`), so a record is never dead-lettered twice,
  whoever reads the partition next, even when the writer died between the letter and the commit;
* survives what the Kafka client cannot read: a record kafka-python fails to parse is found by polling one
  partition at a time, dead-lettered as ``unparseable_record`` and skipped, and the other partitions go on;
  a position past the log end (the broker lost data) is reset by the configured policy
  (``ingest.on_offset_out_of_range``), logged, counted and audited instead of crashing the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from services.audit_log import append_audit
from services.backoff import backoff_s
from services.config import OffsetResetPolicy, ZsadConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import (
    FrameAck,
    FrameRequest,
    ModelUnavailableError,
    decode_record,
    model_input_sizes,
)
from services.frame_path.letter_ledger import (
    PartitionLedger,
    dlq_end_offsets,
    find_letters,
    parse_metadata,
)
from services.frame_path.metrics import PipelineMetrics
from services.frame_path.offsets import OffsetTracker
from services.records import H_DLQ_DROPPED, DeadLetter, FrameHeaders, reason_code
from services.stores.camera_settings import CameraSettings
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

Submit = Callable[[FrameRequest], Awaitable[FrameAck]]
T = TypeVar("T")

LAG_EVERY_S = 5.0
RETRY_BACKOFF_S = (0.1, 5.0)  # first and longest wait before a frame, a letter or an announcement is retried
LOOP_BACKOFF_S = (1.0, 60.0)  # first and longest wait before a crashed loop is started again
PROBE_TIMEOUT_S = 5.0  # longest wait for one record while looking for a record the client cannot parse


MAX_REPLICA_CRASHES = 5  # a frame whose delivery kills the replica this often is dead-lettered


class InferenceFailedError(ZsadError, RuntimeError):
    """The model failed on a frame on every attempt; the frame is dead-lettered with this reason."""

    reason = "inference_failed"


class ReplicaCrashedError(ZsadError, RuntimeError):
    """The replica died every time it held this frame (e.g. out of memory on it); dead-lettered."""

    reason = "replica_crashed"


class UnparseableRecordError(ZsadError, ValueError):
    """The Kafka client could not parse the record (e.g. a header name that is not UTF-8); skipped past."""

    reason = "unparseable_record"


class ConflictingFrameIdError(ZsadError, ValueError):
    """Two records of a camera share a frame id with other bytes: the one read later (higher offset) loses."""

    reason = "conflicting_frame_id"


class OffsetOutOfRangeStopError(ZsadError, RuntimeError):
    """A partition's position lies outside the log and the policy is ``fail``: the partition stops."""

    reason = "offset_out_of_range"


class UnexpectedIngestError(ZsadError, RuntimeError):
    """A bug or an unforeseen input broke the handling of one record; dead-lettered so the partition goes on."""

    reason = "unexpected"


def is_frame_fault(exc: BaseException) -> bool:
    """Whether a failed call to serving is this frame's fault (bounded retries) or the system's (retry on).

    The system's: Ray's own errors (dead or restarting replicas), Serve's (a deployment unavailable, deleted or
    back-pressuring: raised in the caller, not wrapped in a task error), and Redis or network failures inside
    the replica. Anything else the replica raised counts against the frame.
    """
    import redis
    from ray import exceptions as ray_errors
    from ray.serve.exceptions import RayServeException

    system = (
        ray_errors.RayError, RayServeException, redis.RedisError, ModelUnavailableError, ConnectionError, TimeoutError
    )  # fmt: skip
    if isinstance(exc, ray_errors.RayTaskError):
        return not isinstance(getattr(exc, "cause", None), system[1:])
    return not isinstance(exc, system)


class IngestWorker:
    """The ingest loop over a fixed set of partitions.

    Args:
        config: the system configuration (Kafka, cameras, limits, ingest window and retries).
        partitions: partitions of the frames topic this worker owns.
        submit: sends one frame to serving and returns its acknowledgement.
        name: shown in logs and metrics.
        metrics: where to report; ``None`` outside Ray.
        audit: writes one operator-visible audit entry (offset resets); called on a thread of its own, so a
            write that hangs (Redis away) stalls nothing; ``None`` logs only.
    """

    def __init__(
        self,
        config: ZsadConfig,
        partitions: list[int],
        submit: Submit,
        *,
        name: str = "ingest",
        metrics: PipelineMetrics | None = None,
        audit: Callable[[dict[str, str]], None] | None = None,
    ) -> None:
        self.config = config
        self.partitions = sorted(partitions)
        self.submit = submit
        self.name = name
        self.metrics = metrics
        self.audit = audit
        self.tracker = OffsetTracker()
        self.counts: Counter[str] = Counter()
        self.dead_letter_reasons: Counter[str] = Counter()
        self.committed: dict[int, int] = {}
        self.lag: dict[int, int] = {}
        self.log_end: dict[int, int] = {}
        self.past_end: dict[int, int] = {}
        self.stopped_partitions: dict[int, str] = {}  # partition -> why (policy ``fail``)
        self.stopping = False
        self.running = False
        self.healthy = False  # the current loop has polled and committed since it started
        self.error = ""
        # Dead letters not yet below a commit point, per partition. Kept across loop restarts (and seeded from the
        # commit metadata on connect), so a re-read record is finished without a second dead letter.
        self.letters: dict[int, PartitionLedger] = {}
        self._lettering: set[tuple[int, int]] = set()  # (partition, offset) whose letter a task is sending now
        # The cameras as decoding sees them: the configuration, with the ROI of the live settings once followed.
        self.cameras = dict(config.cameras)
        self._limits = config.limits.image_limits()
        self._input_sizes = model_input_sizes(config.cameras)
        self._decode_budget = DecodeBudget(config.ingest.decode_budget_pixels)
        self._kafka_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-kafka")
        self._decoders = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-decode")
        self._auditor = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-audit")  # entries in order, off the loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer: Any = None
        self._producer: Any = None
        self._paused = False
        self._finished = asyncio.Event()
        self._idle_s = 0.0
        self._drain_timeout_s = 30.0
        self._committed_metadata: dict[int, str] = {}
        self._fetch_bytes = max(config.limits.max_bytes * 2, 1 << 20)  # a whole record, with its letter's headers

    def apply_settings(self, settings: CameraSettings) -> None:
        """Crop ``settings.camera``'s next frames to the ROI of its live settings (the replica applies the rest)."""
        configured = self.config.cameras[settings.camera]
        self.cameras = {**self.cameras, settings.camera: configured.model_copy(update={"roi": settings.roi})}

    # -- the loop --------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until :meth:`stop`; on return everything finished is committed and the clients are closed."""
        self.running, self.healthy = True, False
        # A loop restarted in the same actor starts clean: offsets of the old loop's cancelled tasks would
        # otherwise stay pending forever, and the new consumer re-reads them from the committed offsets.
        self.tracker = OffsetTracker()
        self._committed_metadata = {}
        self._paused, self._idle_s = False, 0.0
        try:
            await self._connect()
            last_lag = 0.0
            while not self.stopping:
                await self._poll_once()
                await self._commit()
                if not self.healthy:
                    self.healthy, self.error = True, ""  # recovered: status stops showing the old error
                if time.monotonic() - last_lag > LAG_EVERY_S:
                    await self._measure_lag()
                    last_lag = time.monotonic()
            await self._drain(self._drain_timeout_s)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"  # logged by whoever awaits the loop (the actor, once)
            raise
        finally:
            self.healthy = False
            await self._close()
            self.running = False

    async def stop(self, drain_timeout_s: float = 30.0) -> None:
        """Stop reading, wait up to ``drain_timeout_s`` for frames in flight, commit them, close."""
        self.stopping = True
        self._drain_timeout_s = drain_timeout_s
        deadline = time.monotonic() + drain_timeout_s + 5.0  # the drain, then the final commit and close
        while self.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def _kafka(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._kafka_thread, lambda: call(*args, **kwargs))

    async def _connect(self) -> None:
        from kafka import KafkaConsumer, KafkaProducer
        from kafka.structs import TopicPartition

        kafka = self.config.kafka

        def connect() -> tuple[Any, Any]:
            consumer = KafkaConsumer(
                **kafka.reader_options(self.name),
                group_id=kafka.group_id,
                # No silent resets: a position outside the log raises, and _out_of_range applies the policy.
                auto_offset_reset="none",
                fetch_max_bytes=kafka.receive_message_max_bytes,
                max_partition_fetch_bytes=self._fetch_bytes,
            )
            partitions = [TopicPartition(kafka.frames_topic, partition) for partition in self.partitions]
            consumer.assign(partitions)
            for partition in partitions:
                committed = consumer.committed(partition, metadata=True)
                if committed is None or committed.offset < 0:
                    consumer.seek_to_beginning(partition)  # a new group reads the whole retained log
                    continue
                consumer.seek(partition, committed.offset)
                self._remember_letters(partition.partition, committed.offset, committed.metadata)
            producer = KafkaProducer(
                **kafka.client_kwargs(),
                client_id=f"{kafka.client_id}-{self.name}-dlq",
                acks="all",
                max_request_size=max(self.config.limits.max_bytes * 2, 1 << 20),
            )
            return consumer, producer

        self._consumer, self._producer = await self._kafka(connect)
        for partition in self.stopped_partitions:
            await self._kafka(self._consumer.pause, self._partition(partition))
        log.info("%s: reading %s partitions %s", self.name, kafka.frames_topic, self.partitions)

    def _remember_letters(self, partition: int, committed: int, metadata: str | None) -> None:
        """Seed ``partition``'s ledger from its commit metadata; announced letters are looked up in the topic.

        Runs on the Kafka thread while connecting. An announced letter that is not in the dead-letter topic was
        never sent (its writer died first): its record is read again and lettered then.

        Raises:
            LetterCheckError: the dead-letter topic could not be read (the loop restarts with its backoff).
        """
        stored = parse_metadata(metadata, committed)
        ledger = self.letters.setdefault(partition, PartitionLedger())
        ledger.lettered.update(stored.lettered)
        ledger.announced, ledger.dlq_from = set(), {}  # a new loop: the old loop's unsent announcements are void
        if not stored.announced:
            return
        topic = self.config.kafka.frames_topic
        sources = {f"{topic}:{partition}:{offset}": offset for offset in stored.announced}
        found = find_letters(self.config.kafka, stored.dlq_from, set(sources), fetch_bytes=self._fetch_bytes)
        ledger.lettered.update(sources[source] for source in found)
        self.counts["announced_letters_found"] += len(found)
        log.info("%s: partition %d: %d of %d announced dead letters were written before the last reader stopped",
                 self.name, partition, len(found), len(sources))  # fmt: skip

    def _partition(self, partition: int) -> Any:
        from kafka.structs import TopicPartition

        return TopicPartition(self.config.kafka.frames_topic, partition)

    async def _poll_once(self) -> None:
        window = self.config.ingest.max_in_flight
        free = window - self.tracker.in_flight()
        readable = [tp for tp in self._consumer.assignment() if tp.partition not in self.stopped_partitions]
        if free <= 0 and not self._paused:
            await self._kafka(self._consumer.pause, *readable)
            self._paused = True
        elif free > 0 and self._paused:
            await self._kafka(self._consumer.resume, *readable)
            self._paused = False
        # kafka-python's poll(timeout) loops on fetches until the timeout; a broker that answers empty fetches at
        # once instead of holding them (noida-db) turns that into a busy loop: measured, a caught-up consumer
        # burned a whole core. So every poll returns at once, and the waiting happens here.
        interval_s = self.config.ingest.poll_timeout_ms / 1000
        if self._paused:
            # Full window: sleep until a frame finishes (or the interval passes); paused partitions return
            # nothing, and the poll keeps the consumer alive.
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), interval_s)
        elif self._idle_s > 0:
            await asyncio.sleep(self._idle_s)
        batches = await self._poll(max(free, 1))
        if not self._paused:
            # Caught up: back off 10 ms, 20 ms, ... up to the poll interval; records reset it.
            self._idle_s = 0.0 if batches else min(max(2 * self._idle_s, 0.01), interval_s)
        for records in batches.values():
            self._start_records(records)
        if self.metrics is not None:
            self.metrics.in_flight(self.name, self.tracker.in_flight())

    async def _poll(self, max_records: int) -> dict[Any, list[Any]]:
        """One non-blocking poll; what the client cannot read is handled here instead of ending the loop."""
        from kafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

        try:
            return await self._kafka(self._consumer.poll, timeout_ms=0, max_records=max_records)
        except OffsetOutOfRangeError as exc:
            await self._out_of_range(exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {})
        except NoOffsetForPartitionError as exc:
            await self._out_of_range({tp: -1 for tp in (exc.args[0] if exc.args else ())})
        except KafkaError as exc:
            if getattr(exc, "retriable", False) or not _is_parse_error(exc):
                raise  # the broker or the network: the loop restarts (with backoff) and resumes
            await self._isolate_unparseable(exc)
        except Exception as exc:  # noqa: BLE001 - anything else raised while parsing records: a bad record
            await self._isolate_unparseable(exc)
        return {}

    def _start_records(self, records: list[Any]) -> None:
        for record in records:
            generation = self.tracker.start(record.partition, record.offset)
            if record.offset in self.letters.get(record.partition, ()):
                # Dead-lettered before (by an earlier loop, or by whoever committed the metadata): done already.
                self.counts["dead_letter_replays_skipped"] += 1
                self._finish(record.partition, record.offset, generation)
                continue
            self._spawn(self._handle(record, generation))

    async def _out_of_range(self, positions: dict[Any, int]) -> None:
        """Apply ``ingest.on_offset_out_of_range`` to partitions whose position lies outside the log."""
        policy: OffsetResetPolicy = self.config.ingest.on_offset_out_of_range
        assigned = {tp.partition: tp for tp in self._consumer.assignment()}
        for tp, position in positions.items() or [(tp, -1) for tp in assigned.values()]:
            partition = tp.partition
            if partition not in assigned:
                continue
            begin, end = await self._log_bounds(tp)
            self.tracker.reset(partition)
            self.letters.pop(partition, None)  # offsets above a lost position name other records now
            self.counts["offset_resets"] += 1
            if policy == "fail":
                reason = f"position {position} outside the log [{begin}, {end}); policy 'fail' stops the partition"
                self.stopped_partitions[partition] = reason
                await self._kafka(self._consumer.pause, tp)
                target = position
            elif policy == "latest":
                await self._kafka(self._consumer.seek, tp, end)
                target = end
            else:
                await self._kafka(self._consumer.seek, tp, begin)
                target = begin
            log.error("%s: partition %d: offset %d is outside the log [%d, %d) (did the broker lose data?); "
                      "policy %r: %s", self.name, partition, position, begin, end, policy,
                      "stopped" if policy == "fail" else f"reading from {target}")  # fmt: skip
            if policy != "fail":
                await self._commit_position(tp, target)  # the group's position is repaired even if nothing follows
            if self.metrics is not None:
                self.metrics.offset_reset(partition, policy)
            self._audit({"action": "offset_out_of_range", "actor": self.name, "partition": str(partition),
                         "from_offset": str(position), "to_offset": str(target), "log_start": str(begin),
                         "log_end": str(end), "policy": policy})  # fmt: skip

    async def _commit_position(self, tp: Any, offset: int) -> None:
        from kafka.structs import OffsetAndMetadata

        try:
            await self._kafka(self._consumer.commit, {tp: OffsetAndMetadata(offset, "", -1)})
        except Exception as exc:  # noqa: BLE001 - the next read's commit moves it anyway
            log.warning("%s: commit of reset position failed (%s)", self.name, exc)
            return
        self._note_commit(tp.partition, offset, "")

    async def _log_bounds(self, tp: Any) -> tuple[int, int]:
        begin = await self._kafka(self._consumer.beginning_offsets, [tp], timeout_ms=5000)
        end = await self._kafka(self._consumer.end_offsets, [tp], timeout_ms=5000)
        return int(begin[tp]), int(end[tp])

    async def _isolate_unparseable(self, error: BaseException) -> None:
        """Find the partitions whose next record the client cannot parse, dead-letter those offsets, skip them.

        kafka-python raises from ``poll()`` without saying which partition failed, and a second poll at the same
        position does not raise again but spins inside the client for ever. So the consumer is not polled: a
        probe consumer reads one record from each partition's position, a partition whose probe fails the same
        way holds the bad record there, and the consumer seeks past it (which also discards the broken fetch).

        Raises:
            the original error, when no partition reproduces it (the loop then restarts with a backoff).
        """
        log.warning("%s: the Kafka client could not parse a record (%s: %s); looking for it",
                    self.name, type(error).__name__, error)  # fmt: skip
        readable = [tp for tp in self._consumer.assignment() if tp.partition not in self.stopped_partitions]
        found = False
        for tp in sorted(readable, key=lambda tp: tp.partition):
            position = await self._kafka(self._consumer.position, tp)
            failure = await asyncio.get_running_loop().run_in_executor(None, self._probe, tp, position)
            if failure is not None:
                await self._skip_unparseable(tp, position, failure)
                found = True
        if not found:
            raise error

    def _probe(self, tp: Any, offset: int) -> BaseException | None:
        """Read the record at ``offset`` of ``tp`` with a fresh consumer; the parse error it raises, if any."""
        from kafka import KafkaConsumer
        from kafka.errors import KafkaError

        kafka = self.config.kafka
        probe = KafkaConsumer(**kafka.reader_options(f"{self.name}-probe"), auto_offset_reset="none",
                              max_partition_fetch_bytes=self._fetch_bytes)  # fmt: skip
        try:
            probe.assign([tp])
            probe.seek(tp, offset)
            deadline = time.monotonic() + PROBE_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    if probe.poll(timeout_ms=200, max_records=1):
                        return None
                except Exception as exc:  # noqa: BLE001 - what is being looked for; other Kafka errors: not this
                    if isinstance(exc, KafkaError) and not _is_parse_error(exc):
                        return None
                    return exc
            return None
        finally:
            probe.close()

    async def _skip_unparseable(self, tp: Any, offset: int, error: BaseException) -> None:
        await self._kafka(self._consumer.seek, tp, offset + 1)
        self.counts["unparseable"] += 1
        generation = self.tracker.start(tp.partition, offset)
        if offset in self.letters.get(tp.partition, ()):
            self._finish(tp.partition, offset, generation)
            return
        record = _UnreadRecord(topic=tp.topic, partition=tp.partition, offset=offset)
        detail = f"the Kafka client could not parse the record: {type(error).__name__}: {error}"
        self._spawn(self._dead_letter(record, UnparseableRecordError(detail), generation))

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, record: Any, generation: int) -> None:
        try:
            await self._handle_record(record, generation)
        except asyncio.CancelledError:
            raise  # stopping: left unfinished, re-read by the partition's next owner
        except Exception as exc:
            log.exception("%s: record %s:%d failed unexpectedly", self.name, record.partition, record.offset)
            await self._dead_letter(record, UnexpectedIngestError(f"{type(exc).__name__}: {exc}"), generation)

    async def _handle_record(self, record: Any, generation: int) -> None:
        loop = asyncio.get_running_loop()
        read_ts = time.time()
        try:
            request = await loop.run_in_executor(
                self._decoders,
                lambda: decode_record(
                    record,
                    self.cameras,
                    self._limits,
                    input_sizes=self._input_sizes,
                    budget=self._decode_budget,
                    read_ts=read_ts,
                ),
            )
        except ZsadError as exc:
            await self._dead_letter(record, exc, generation)
            return
        if self.metrics is not None:
            self.metrics.stage("decode", request.decoded_ts - read_ts)
        await self._deliver(record, request, generation)

    async def _deliver(self, record: Any, request: FrameRequest, generation: int) -> None:
        from ray.exceptions import ActorDiedError

        failures = system_failures = crashes = 0
        while True:
            try:
                ack = await self.submit(request)
            except Exception as exc:  # noqa: BLE001 - classified below; nothing may kill the loop
                if self.stopping:
                    return  # left unfinished: not committed, re-read by whoever owns the partition next
                if is_frame_fault(exc):
                    failures += 1
                    ack = None
                    detail = f"{type(exc).__name__}: {exc}"
                else:
                    system_failures += 1
                    crashes += isinstance(exc, ActorDiedError)
                    if crashes >= MAX_REPLICA_CRASHES:
                        error = ReplicaCrashedError(f"{crashes} replicas died holding it")
                        await self._dead_letter(record, error, generation)
                        return
                    self.counts["system_retries"] += 1
                    log.warning("%s: serving unavailable (%s), retrying frame %s", self.name, exc, request.frame_id)
                    await asyncio.sleep(backoff_s(system_failures, *RETRY_BACKOFF_S))
                    continue
            else:
                if ack.status == "conflict":
                    kept = f"{record.topic}:{ack.rival_partition}:{ack.rival_offset}"
                    await self._dead_letter(record, _conflict(request.frame_id, request.camera, kept), generation)
                    return
                if ack.status == "replaced":
                    await self._letter_replaced(record, request, ack)
                if ack.status != "failed":
                    self.counts[ack.status] += 1
                    self._finish(request.partition, request.offset, generation)
                    return
                failures += 1
                detail = ack.error_detail
            self.counts["frame_retries"] += 1
            if failures > self.config.ingest.max_retries:
                error = InferenceFailedError(f"{failures} attempts failed; last: {detail}")
                await self._dead_letter(record, error, generation)
                return

    async def _letter_replaced(self, record: Any, request: FrameRequest, ack: FrameAck) -> None:
        """Dead-letter the record whose result ``record``'s frame replaced: it reused the frame id at a higher offset.

        It was finished as stored, but its offset is above ``record``'s, so not committed yet: its letter goes
        through the ledger like any other. Its bytes are read back from the frames topic.
        """
        from services.stores.frame_readback import FrameUnavailableError, fetch_record

        kafka = self.config.kafka
        partition, offset = ack.rival_partition, ack.rival_offset
        try:
            replaced = await asyncio.get_running_loop().run_in_executor(
                None, lambda: fetch_record(kafka, partition, offset, request.frame_id, camera=request.camera)
            )
        except FrameUnavailableError as exc:  # its letter keeps the reason; the bytes are wherever the source says
            log.warning("%s: replaced record %s:%d unreadable: %s", self.name, partition, offset, exc)
            replaced = _UnreadRecord(topic=record.topic, partition=partition, offset=offset, key=record.key)
        kept = f"{record.topic}:{record.partition}:{record.offset}"
        error = _conflict(request.frame_id, request.camera, kept)
        await self._dead_letter(replaced, error, None)

    async def _dead_letter(self, record: Any, error: ZsadError, generation: int | None) -> None:
        """Send ``record``'s dead letter and finish its offset (``generation`` ``None``: its own task finishes it)."""
        source = (record.partition, record.offset)
        if source in self._lettering or record.offset in self.letters.get(record.partition, ()):
            # Lettered already, or being lettered: a replaced result's record, by the frame that took its id.
            if generation is not None:
                self._finish(record.partition, record.offset, generation)
            return
        self._lettering.add(source)
        try:
            await self._send_dead_letter(record, error, generation)
        finally:
            self._lettering.discard(source)

    async def _send_dead_letter(self, record: Any, error: ZsadError, generation: int | None) -> None:
        letter = DeadLetter.build(
            key=record.key,
            value=record.value,
            headers=record.headers,
            error=error,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dlq_topic=self.config.kafka.dlq_topic,
            group=self.config.kafka.group_id,
        )
        if not await self._announce(record.partition, record.offset):
            return  # stopping before the announcement was committed: nothing was sent, the record is re-read
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                # In a worker thread: send() itself blocks (up to max_block_ms) while the broker is away.
                await loop.run_in_executor(None, self._send_letter, letter)
                break
            except Exception as exc:  # noqa: BLE001 - the broker is down: the record stays unfinished meanwhile
                attempt += 1
                if self.stopping:
                    return
                if not getattr(exc, "retriable", True) and letter.value:
                    # e.g. the copy with our headers exceeds the broker's message size: keep the reason, drop
                    # the payload (it is still in the frames topic at the source offset named in the headers).
                    letter = dataclasses.replace(letter, value=None, headers=[*letter.headers, (H_DLQ_DROPPED, b"1")])
                log.warning("%s: dead-letter send failed (%s), retrying", self.name, exc)
                await asyncio.sleep(backoff_s(attempt, *RETRY_BACKOFF_S))
        reason = reason_code(error)
        self.counts["dead_lettered"] += 1
        self.dead_letter_reasons[reason] += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(_camera_of(record), reason)
        self.letters.setdefault(record.partition, PartitionLedger()).acknowledged(record.offset)
        if generation is not None:
            self._finish(record.partition, record.offset, generation)
        # Commit now (the offset, or the letter in the commit's metadata): nothing may re-read it and write a
        # second letter, even if this loop dies right after.
        await self._commit()

    async def _announce(self, partition: int, offset: int) -> bool:
        """Commit that ``offset``'s letter is about to be sent (see :mod:`services.frame_path.letter_ledger`).

        Retried until the broker has it: a letter sent without it could be written again by the next reader.
        Returns ``False`` only when the worker stops first.
        """
        attempt = 0
        while not self.stopping:
            ledger = self.letters.setdefault(partition, PartitionLedger())
            try:
                if offset not in ledger.announced:
                    # Where the dead-letter topic ends now; not asked while letters announced earlier pin an
                    # earlier position to search from (the ledger keeps that one).
                    topic = self.config.kafka.dlq_topic
                    ends = {} if ledger.announced else await self._kafka(dlq_end_offsets, self._consumer, topic)
                    ledger.announce(offset, ends)
            except Exception as exc:  # noqa: BLE001 - the broker is away; so is the letter's destination
                log.warning("%s: dead-letter topic unreadable (%s), retrying", self.name, exc)
            else:
                if await self._commit():
                    return True
            attempt += 1
            await asyncio.sleep(backoff_s(attempt, *RETRY_BACKOFF_S))
        return False

    def _send_letter(self, letter: DeadLetter) -> None:
        self._producer.send(letter.topic, key=letter.key, value=letter.value, headers=letter.headers).get(30)

    def _finish(self, partition: int, offset: int, generation: int) -> None:
        self.tracker.finish(partition, offset, generation)
        self._finished.set()

    async def _commit(self) -> bool:
        """Commit finished offsets and changed ledgers; ``False`` if the broker refused (retried next time)."""
        from kafka.structs import OffsetAndMetadata

        if self._consumer is None:
            return False
        moved = self.tracker.committable()
        request, offsets = {}, {}
        for partition in set(moved) | set(self.letters):
            offset = moved.get(partition, self.committed.get(partition))
            if offset is None:
                continue
            metadata = self.letters[partition].metadata(offset) if partition in self.letters else ""
            if partition in moved or metadata != self._committed_metadata.get(partition, ""):
                request[self._partition(partition)] = OffsetAndMetadata(offset, metadata, -1)
                offsets[partition] = (offset, metadata)
        if not request:
            return True
        try:
            await self._kafka(self._consumer.commit, request)
        except Exception as exc:  # noqa: BLE001 - a failed commit is retried with the next one
            log.warning("%s: commit failed (%s); will retry", self.name, exc)
            return False
        for partition, (offset, metadata) in offsets.items():
            self._note_commit(partition, offset, metadata)
        return True

    def _note_commit(self, partition: int, offset: int, metadata: str) -> None:
        """What the broker now holds for ``partition``; a commit below the previous one (only after an
        out-of-range reset to an earlier offset) is counted as a rewind."""
        previous = self.committed.get(partition)
        if previous is not None and offset < previous:
            self.counts["commit_rewinds"] += 1
            if self.metrics is not None:
                self.metrics.commit_rewound(partition)
        self.committed[partition] = offset
        self._committed_metadata[partition] = metadata
        self.tracker.mark_committed({partition: offset})

    async def _measure_lag(self) -> None:
        try:
            ends = await self._kafka(self._consumer.end_offsets, list(self._consumer.assignment()), timeout_ms=5000)
        except Exception as exc:  # noqa: BLE001 - lag is informational; some brokers answer this badly
            log.debug("%s: end offsets unavailable: %s", self.name, exc)
            return
        for topic_partition, end in ends.items():
            partition, end = topic_partition.partition, int(end)
            position = self.committed.get(partition, 0)
            previous_end = self.log_end.get(partition)
            if previous_end is not None and end < previous_end:
                # The log got shorter: the broker lost acknowledged records (or the topic was recreated).
                self.counts["log_end_rewinds"] += 1
                log.error("%s: partition %d: the log end moved back from %d to %d", self.name, partition,
                          previous_end, end)  # fmt: skip
                if self.metrics is not None:
                    self.metrics.log_end_rewound(partition)
                self._audit({"action": "log_end_rewound", "actor": self.name, "partition": str(partition),
                             "from_offset": str(previous_end), "to_offset": str(end)})  # fmt: skip
            self.log_end[partition] = end
            self.past_end[partition] = max(position - end, 0)
            self.lag[partition] = max(end - position, 0)
            if self.metrics is not None:
                self.metrics.lag(partition, self.lag[partition])
                self.metrics.committed_past_end(partition, self.past_end[partition])

    def _audit(self, entry: dict[str, str]) -> None:
        """Write ``entry`` on the audit thread without waiting: a Redis outage must not stall polls and commits."""
        if self.audit is not None:
            self._auditor.submit(self.audit, entry).add_done_callback(self._audit_written)

    def _audit_written(self, written: Future[None]) -> None:
        if written.exception() is not None:  # the audit is for operators; the log line before it has it too
            log.warning("%s: audit entry not written: %s", self.name, written.exception())

    async def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        await self._commit()

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        clients = [client for client in (self._consumer, self._producer) if client is not None]
        self._consumer = self._producer = None
        for client in clients:
            try:
                await self._kafka(client.close)
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("%s: close failed: %s", self.name, exc)

    def stats(self) -> dict[str, Any]:
        """Counters and positions, for ``zsad status`` and tests."""
        return {
            "name": self.name,
            "partitions": self.partitions,
            "running": self.running,
            "healthy": self.healthy,
            "error": self.error,
            "in_flight": self.tracker.in_flight(),
            "paused": self._paused,
            "counts": dict(self.counts),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "committed": dict(self.committed),
            "lag": dict(self.lag),
            "log_end": dict(self.log_end),
            "committed_past_end": {partition: n for partition, n in self.past_end.items() if n},
            "stopped_partitions": dict(self.stopped_partitions),
        }


@dataclasses.dataclass(frozen=True)
class _UnreadRecord:
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


def _is_parse_error(exc: BaseException) -> bool:
    from kafka.consumer.fetcher import RecordTooLargeError
    from kafka.errors import CorruptRecordError

    return isinstance(exc, CorruptRecordError | RecordTooLargeError)


def _conflict(frame_id: str, camera: str, kept: str) -> ConflictingFrameIdError:
    """The error of the record that loses a frame-id conflict; the detail ends with where the kept record is."""
    return ConflictingFrameIdError(f"frame id {frame_id!r} of camera {camera!r} is taken by other bytes; kept: {kept}")


def _camera_of(record: Any) -> str:
    try:
        return FrameHeaders.from_kafka(record.key, record.headers).camera
    except ZsadError:
        return "unknown"


class IngestActor:
    """The Ray actor around one :class:`IngestWorker` (created by the supervisor with restarts enabled).

    A restarted actor comes back through ``__init__`` with the same partitions; the supervisor's watch loop
    calls :meth:`ensure_running`, and the consumer resumes from the committed offsets. A loop that crashed is
    started again only after a jittered backoff that doubles with each consecutive crash (up to 1 s for the
    first, at most 60 s), so a fault that persists (a broker away) neither spins nor floods the logs (one log
    entry per crash); the state shows in :meth:`stats`.
    """

    def __init__(self, config: ZsadConfig, partitions: list[int], inspector: Any, name: str) -> None:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO

        async def submit(request: FrameRequest) -> FrameAck:
            return await inspector.score.remote(request)

        self.config = config
        self.metrics = PipelineMetrics(config)
        self.worker = IngestWorker(config, partitions, submit, name=name, metrics=self.metrics, audit=self._audit)
        self.follower = _follow_roi(config, self.worker)
        self._task: asyncio.Task[None] | None = None
        self._redis: Any = None
        self.crashes = 0  # consecutive: reset once a restarted loop is healthy
        self.restarts = 0
        self.last_error = ""
        self.last_error_ts = 0.0
        self._next_start = 0.0

    def _audit(self, entry: dict[str, str]) -> None:
        """Append to the audit stream that operators read (the registry's, ``zsad registry audit``)."""
        from services.stores.result_store import connect

        if self._redis is None:
            self._redis = connect(self.config.redis)
        append_audit(self._redis, self.config.registry.namespace, {**entry, "ts": repr(time.time())})

    async def ensure_running(self) -> bool:
        """Start the loop if it is not running and its backoff has passed; True if it was started now."""
        if self.worker.healthy:
            self.crashes = 0
        if self._task is not None and not self._task.done():
            return False
        if self.worker.stopping:
            return False
        if self._task is not None:  # the loop ended on its own: it crashed
            # Retrieved here, so that asyncio does not log the same crash a second time when the task is freed.
            crash = None if self._task.cancelled() else self._task.exception()
            self._task, error = None, self.worker.error
            self.crashes += 1
            self.last_error, self.last_error_ts = error, time.time()
            backoff = backoff_s(self.crashes, *LOOP_BACKOFF_S)
            self._next_start = time.monotonic() + backoff
            self.metrics.loop_crashed(self.worker.name)
            log.error("%s: ingest loop crashed (%d in a row): %s; restarting in %.1f s", self.worker.name,
                      self.crashes, error, backoff, exc_info=crash)  # fmt: skip
        if time.monotonic() < self._next_start:
            return False
        self.restarts += self._next_start > 0
        self._task = asyncio.get_running_loop().create_task(self.worker.run())
        return True

    async def stop(self, drain_timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop, commit what finished and report the final stats.

        The settings follower stops alongside the drain, not before it: its thread notices the stop only at its
        next pub/sub read (up to a second), which every drain used to wait for.
        """
        await asyncio.gather(asyncio.to_thread(self.follower.stop), self.worker.stop(drain_timeout_s))
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        """The worker's counters and positions, and the loop's state (``running``, ``backing_off``, ``stopped``)."""
        stats = self.worker.stats()
        waiting = max(self._next_start - time.monotonic(), 0.0)
        running = self._task is not None and not self._task.done()
        state = "running" if running else "backing_off" if waiting > 0 else "stopped"
        stats.update(
            loop_state=state,
            loop_restarts=self.restarts,
            consecutive_crashes=self.crashes,
            restart_in_s=round(waiting, 1),
            last_error=self.last_error,
            last_error_age_s=round(time.time() - self.last_error_ts, 1) if self.last_error_ts else None,
        )
        return stats


def _follow_roi(config: ZsadConfig, worker: IngestWorker) -> Any:
    """Follow the cameras' live settings for their ROI (ingest crops before sending), as the replicas do."""
    import redis

    from services.frame_path.settings_follower import CameraSettingsFollower
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.camera_settings import CameraSettingsStore
    from services.stores.result_store import connect

    registry = ArtifactRegistry.from_config(config.registry, connect(config.redis))
    follower = CameraSettingsFollower(CameraSettingsStore(registry, config), config.cameras, worker.apply_settings)
    try:
        follower.refresh(follower.cameras)
    except redis.RedisError as exc:
        log.warning("%s: camera settings unreadable at start, cropping to the configured ROI: %s", worker.name, exc)
    return follower.start()
