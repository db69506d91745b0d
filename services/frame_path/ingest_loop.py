"""The ingest loop: read assigned partitions, decode frames, keep a bounded window in flight, commit what is done.

One :class:`IngestWorker` per Ray actor (:class:`~services.frame_path.ingest_actor.IngestActor`). Its loop, all on
one asyncio event loop:

* polls its partitions through :class:`~services.frame_path.kafka_reader.FramesReader` (``assign()``, never the
  broker's group protocol: :mod:`services.frame_path.supervisor` decides who reads what);
* decodes each record on a small thread pool; a record that fails validation goes to the dead-letter topic
  with its reason, and counts as done once the broker has it;
* sends good frames to the Serve inspector through a ``DeploymentHandle``, at most ``max_in_flight`` at a
  time: when the window is full it pauses its partitions and keeps polling, and resumes as acks arrive;
* retries: a frame the model failed on is retried ``max_retries`` times, then dead-lettered; a failure of
  the infrastructure (a replica died, Redis unreachable) is not the frame's fault and is retried until it
  succeeds or the worker stops, so no frame is dead-lettered because a replica restarted;
* commits, per partition, only past the highest contiguous finished offset, under the consumer group id, so a
  restarted actor resumes there and standard lag tools see the group (:mod:`services.frame_path.commit_ledger`).
  The commit also carries the ledger of dead letters above the commit point, so a record is never dead-lettered
  twice, whoever reads the partition next (:mod:`services.frame_path.dead_letter_sender`);
* survives what the Kafka client cannot read: a record kafka-python fails to parse is found by probing one
  partition at a time, dead-lettered as ``unparseable_record`` and skipped, and the other partitions go on;
  a position past the log end (the broker lost data) is reset by the configured policy
  (``ingest.on_offset_out_of_range``), logged, counted and audited instead of crashing the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from services.backoff import backoff_s
from services.config import OffsetResetPolicy, ZsadConfig
from services.frame_path.commit_ledger import CommitLedger
from services.frame_path.dead_letter_sender import RETRY_BACKOFF_S, DeadLetterSender
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import (
    FrameAck,
    FrameRequest,
    ModelUnavailableError,
    decode_record,
    model_input_sizes,
)
from services.frame_path.kafka_reader import FramesReader, UnreadRecord, is_parse_error
from services.frame_path.metrics import PipelineMetrics
from services.stores.camera_settings import CameraSettings
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

Submit = Callable[[FrameRequest], Awaitable[FrameAck]]

LAG_EVERY_S = 5.0
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
        self.counts: Counter[str] = Counter()
        self.dead_letter_reasons: Counter[str] = Counter()
        self.lag: dict[int, int] = {}
        self.log_end: dict[int, int] = {}
        self.past_end: dict[int, int] = {}
        self.stopped_partitions: dict[int, str] = {}  # partition -> why (policy ``fail``)
        self.stopping = False
        self.running = False
        self.healthy = False  # the current loop has polled and committed since it started
        self.error = ""
        fetch_bytes = max(config.limits.max_bytes * 2, 1 << 20)  # a whole record, with its letter's headers
        self.reader = FramesReader(config, self.partitions, name, fetch_bytes)
        self.commits = CommitLedger(name, self.counts, metrics)
        self.letter_sender = DeadLetterSender(
            config,
            self.reader,
            self.commits,
            name=name,
            counts=self.counts,
            reasons=self.dead_letter_reasons,
            metrics=metrics,
            finish=self._finish,
            stopping=lambda: self.stopping,
        )
        # The cameras as decoding sees them: the configuration, with the ROI of the live settings once followed.
        self.cameras = dict(config.cameras)
        self._limits = config.limits.image_limits()
        self._input_sizes = model_input_sizes(config.cameras)
        self._decode_budget = DecodeBudget(config.ingest.decode_budget_pixels)
        self._decoders = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-decode")
        self._auditor = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-audit")  # entries in order, off the loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._finished = asyncio.Event()
        self._idle_s = 0.0
        self._drain_timeout_s = 30.0

    def apply_settings(self, settings: CameraSettings) -> None:
        """Crop ``settings.camera``'s next frames to the ROI of its live settings (the replica applies the rest)."""
        configured = self.config.cameras[settings.camera]
        self.cameras = {**self.cameras, settings.camera: configured.model_copy(update={"roi": settings.roi})}

    # -- the loop --------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until :meth:`stop`; on return everything finished is committed and the clients are closed."""
        self.running, self.healthy = True, False
        self.commits.restart()
        self._paused, self._idle_s = False, 0.0
        try:
            await self._connect()
            last_lag = 0.0
            while not self.stopping:
                await self._poll_once()
                await self.commits.commit(self.reader)
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

    async def _connect(self) -> None:
        resumed = await self.reader.connect()
        for partition, (offset, metadata) in resumed.items():
            self.commits.resume(partition, offset, metadata)
            await self.reader.call(self.letter_sender.recover, partition, offset, metadata)
        await self.reader.call(self.letter_sender.open)
        for partition in self.stopped_partitions:
            await self.reader.pause(self.reader.topic_partition(partition))
        log.info("%s: reading %s partitions %s", self.name, self.config.kafka.frames_topic, self.partitions)

    async def _poll_once(self) -> None:
        window = self.config.ingest.max_in_flight
        free = window - self.commits.tracker.in_flight()
        readable = self._readable()
        if free <= 0 and not self._paused:
            await self.reader.pause(*readable)
            self._paused = True
        elif free > 0 and self._paused:
            await self.reader.resume(*readable)
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
            self.metrics.in_flight(self.name, self.commits.tracker.in_flight())

    def _readable(self) -> list[Any]:
        return [tp for tp in self.reader.assignment() if tp.partition not in self.stopped_partitions]

    async def _poll(self, max_records: int) -> dict[Any, list[Any]]:
        """One non-blocking poll; what the client cannot read is handled here instead of ending the loop."""
        from kafka.errors import KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

        try:
            return await self.reader.poll(max_records)
        except OffsetOutOfRangeError as exc:
            await self._out_of_range(exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {})
        except NoOffsetForPartitionError as exc:
            await self._out_of_range({tp: -1 for tp in (exc.args[0] if exc.args else ())})
        except KafkaError as exc:
            if getattr(exc, "retriable", False) or not is_parse_error(exc):
                raise  # the broker or the network: the loop restarts (with backoff) and resumes
            await self._isolate_unparseable(exc)
        except Exception as exc:  # noqa: BLE001 - anything else raised while parsing records: a bad record
            await self._isolate_unparseable(exc)
        return {}

    def _start_records(self, records: list[Any]) -> None:
        for record in records:
            generation = self.commits.tracker.start(record.partition, record.offset)
            if self.commits.lettered(record.partition, record.offset):
                # Dead-lettered before (by an earlier loop, or by whoever committed the metadata): done already.
                self.counts["dead_letter_replays_skipped"] += 1
                self._finish(record.partition, record.offset, generation)
                continue
            self._spawn(self._handle(record, generation))

    async def _out_of_range(self, positions: dict[Any, int]) -> None:
        """Apply ``ingest.on_offset_out_of_range`` to partitions whose position lies outside the log."""
        policy: OffsetResetPolicy = self.config.ingest.on_offset_out_of_range
        assigned = {tp.partition: tp for tp in self.reader.assignment()}
        for tp, position in positions.items() or [(tp, -1) for tp in assigned.values()]:
            partition = tp.partition
            if partition not in assigned:
                continue
            begin, end = await self.reader.log_bounds(tp)
            self.commits.reset(partition)  # offsets above a lost position name other records now
            self.counts["offset_resets"] += 1
            if policy == "fail":
                reason = f"position {position} outside the log [{begin}, {end}); policy 'fail' stops the partition"
                self.stopped_partitions[partition] = reason
                await self.reader.pause(tp)
                target = position
            elif policy == "latest":
                await self.reader.seek(tp, end)
                target = end
            else:
                await self.reader.seek(tp, begin)
                target = begin
            log.error("%s: partition %d: offset %d is outside the log [%d, %d) (did the broker lose data?); "
                      "policy %r: %s", self.name, partition, position, begin, end, policy,
                      "stopped" if policy == "fail" else f"reading from {target}")  # fmt: skip
            if policy != "fail":
                # The group's position is repaired even if nothing follows.
                await self.commits.commit_position(self.reader, partition, target)
            if self.metrics is not None:
                self.metrics.offset_reset(partition, policy)
            self._audit({"action": "offset_out_of_range", "actor": self.name, "partition": str(partition),
                         "from_offset": str(position), "to_offset": str(target), "log_start": str(begin),
                         "log_end": str(end), "policy": policy})  # fmt: skip

    async def _isolate_unparseable(self, error: BaseException) -> None:
        """Dead-letter the records the client cannot parse (:meth:`FramesReader.unparseable`) and skip them.

        Raises:
            the original error, when no partition reproduces it (the loop then restarts with a backoff).
        """
        log.warning("%s: the Kafka client could not parse a record (%s: %s); looking for it",
                    self.name, type(error).__name__, error)  # fmt: skip
        found = await self.reader.unparseable(self._readable())
        for tp, offset, failure in found:
            # Seeking past it also discards the broken fetch.
            await self._skip_unparseable(tp, offset, failure)
        if not found:
            raise error

    async def _skip_unparseable(self, tp: Any, offset: int, error: BaseException) -> None:
        await self.reader.seek(tp, offset + 1)
        self.counts["unparseable"] += 1
        generation = self.commits.tracker.start(tp.partition, offset)
        if self.commits.lettered(tp.partition, offset):
            self._finish(tp.partition, offset, generation)
            return
        record = UnreadRecord(topic=tp.topic, partition=tp.partition, offset=offset)
        detail = f"the Kafka client could not parse the record: {type(error).__name__}: {error}"
        self._spawn(self.letter_sender.send(record, UnparseableRecordError(detail), generation))

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
            await self.letter_sender.send(record, UnexpectedIngestError(f"{type(exc).__name__}: {exc}"), generation)

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
            await self.letter_sender.send(record, exc, generation)
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
                        await self.letter_sender.send(record, error, generation)
                        return
                    self.counts["system_retries"] += 1
                    log.warning("%s: serving unavailable (%s), retrying frame %s", self.name, exc, request.frame_id)
                    await asyncio.sleep(backoff_s(system_failures, *RETRY_BACKOFF_S))
                    continue
            else:
                if ack.status == "conflict":
                    kept = f"{record.topic}:{ack.rival_partition}:{ack.rival_offset}"
                    conflict = _conflict(request.frame_id, request.camera, kept)
                    await self.letter_sender.send(record, conflict, generation)
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
                await self.letter_sender.send(record, error, generation)
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
            replaced = UnreadRecord(topic=record.topic, partition=partition, offset=offset, key=record.key)
        kept = f"{record.topic}:{record.partition}:{record.offset}"
        error = _conflict(request.frame_id, request.camera, kept)
        await self.letter_sender.send(replaced, error, None)

    def _finish(self, partition: int, offset: int, generation: int) -> None:
        self.commits.tracker.finish(partition, offset, generation)
        self._finished.set()

    async def _measure_lag(self) -> None:
        try:
            ends = await self.reader.log_ends()
        except Exception as exc:  # noqa: BLE001 - lag is informational; some brokers answer this badly
            log.debug("%s: end offsets unavailable: %s", self.name, exc)
            return
        for partition, end in ends.items():
            position = self.commits.committed.get(partition, 0)
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
        await self.commits.commit(self.reader)

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for close in (self.reader.close, self.letter_sender.close):
            try:
                await close()
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
            "in_flight": self.commits.tracker.in_flight(),
            "paused": self._paused,
            "counts": dict(self.counts),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "committed": dict(self.commits.committed),
            "lag": dict(self.lag),
            "log_end": dict(self.log_end),
            "committed_past_end": {partition: n for partition, n in self.past_end.items() if n},
            "stopped_partitions": dict(self.stopped_partitions),
        }


def _conflict(frame_id: str, camera: str, kept: str) -> ConflictingFrameIdError:
    """The error of the record that loses a frame-id conflict; the detail ends with where the kept record is."""
    return ConflictingFrameIdError(f"frame id {frame_id!r} of camera {camera!r} is taken by other bytes; kept: {kept}")
