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
  the consumer group id, so a restarted actor resumes there and standard lag tools see the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from services.config import ZsadConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import (
    FrameAck,
    FrameRequest,
    ModelUnavailableError,
    decode_record,
    model_input_sizes,
)
from services.frame_path.metrics import PipelineMetrics
from services.frame_path.offsets import OffsetTracker
from services.frame_path.records import H_DLQ_DROPPED, DeadLetter, FrameHeaders, reason_code
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

Submit = Callable[[FrameRequest], Awaitable[FrameAck]]
T = TypeVar("T")

LAG_EVERY_S = 5.0
MAX_BACKOFF_S = 5.0


MAX_REPLICA_CRASHES = 5  # a frame whose delivery kills the replica this often is dead-lettered


class InferenceFailedError(ZsadError, RuntimeError):
    """The model failed on a frame on every attempt; the frame is dead-lettered with this reason."""

    reason = "inference_failed"


class ReplicaCrashedError(ZsadError, RuntimeError):
    """The replica died every time it held this frame (e.g. out of memory on it); dead-lettered."""

    reason = "replica_crashed"


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
    """

    def __init__(
        self,
        config: ZsadConfig,
        partitions: list[int],
        submit: Submit,
        *,
        name: str = "ingest",
        metrics: PipelineMetrics | None = None,
    ) -> None:
        self.config = config
        self.partitions = sorted(partitions)
        self.submit = submit
        self.name = name
        self.metrics = metrics
        self.tracker = OffsetTracker()
        self.counts: Counter[str] = Counter()
        self.dead_letter_reasons: Counter[str] = Counter()
        self.committed: dict[int, int] = {}
        self.lag: dict[int, int] = {}
        self.stopping = False
        self.running = False
        self.error = ""
        self._limits = config.limits.image_limits()
        self._input_sizes = model_input_sizes(config.cameras)
        self._decode_budget = DecodeBudget(config.ingest.decode_budget_pixels)
        self._kafka_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}-kafka")
        self._decoders = ThreadPoolExecutor(2, thread_name_prefix=f"{name}-decode")
        self._tasks: set[asyncio.Task[None]] = set()
        self._consumer: Any = None
        self._producer: Any = None
        self._paused = False
        self._finished = asyncio.Event()
        self._idle_s = 0.0
        self._drain_timeout_s = 30.0

    # -- the loop --------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Consume until :meth:`stop`; on return everything finished is committed and the clients are closed."""
        self.running = True
        # A loop restarted in the same actor starts clean: offsets of the old loop's cancelled tasks would
        # otherwise stay pending forever, and the new consumer re-reads them from the committed offsets.
        self.tracker = OffsetTracker()
        self._paused, self._idle_s = False, 0.0
        try:
            await self._connect()
            last_lag = 0.0
            while not self.stopping:
                await self._poll_once()
                await self._commit()
                if time.monotonic() - last_lag > LAG_EVERY_S:
                    await self._measure_lag()
                    last_lag = time.monotonic()
            await self._drain(self._drain_timeout_s)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: ingest loop failed", self.name)
            raise
        finally:
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
                **kafka.client_kwargs(),
                group_id=kafka.group_id,
                client_id=f"{kafka.client_id}-{self.name}",
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                receive_message_max_bytes=kafka.receive_message_max_bytes,
                fetch_max_bytes=kafka.receive_message_max_bytes,
                max_partition_fetch_bytes=max(self.config.limits.max_bytes * 2, 1 << 20),
            )
            consumer.assign([TopicPartition(kafka.frames_topic, partition) for partition in self.partitions])
            producer = KafkaProducer(
                **kafka.client_kwargs(),
                client_id=f"{kafka.client_id}-{self.name}-dlq",
                acks="all",
                max_request_size=max(self.config.limits.max_bytes * 2, 1 << 20),
            )
            return consumer, producer

        self._consumer, self._producer = await self._kafka(connect)
        log.info("%s: reading %s partitions %s", self.name, kafka.frames_topic, self.partitions)

    async def _poll_once(self) -> None:
        window = self.config.ingest.max_in_flight
        free = window - self.tracker.in_flight()
        assigned = list(self._consumer.assignment())
        if free <= 0 and not self._paused:
            await self._kafka(self._consumer.pause, *assigned)
            self._paused = True
        elif free > 0 and self._paused:
            await self._kafka(self._consumer.resume, *assigned)
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
        batches = await self._kafka(self._consumer.poll, timeout_ms=0, max_records=max(free, 1))
        if not self._paused:
            # Caught up: back off 10 ms, 20 ms, ... up to the poll interval; records reset it.
            self._idle_s = 0.0 if batches else min(max(2 * self._idle_s, 0.01), interval_s)
        for records in batches.values():
            for record in records:
                self.tracker.start(record.partition, record.offset)
                self._spawn(self._handle(record))
        if self.metrics is not None:
            self.metrics.in_flight(self.name, self.tracker.in_flight())

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, record: Any) -> None:
        try:
            await self._handle_record(record)
        except asyncio.CancelledError:
            raise  # stopping: left unfinished, re-read by the partition's next owner
        except Exception as exc:
            log.exception("%s: record %s:%d failed unexpectedly", self.name, record.partition, record.offset)
            await self._dead_letter(record, UnexpectedIngestError(f"{type(exc).__name__}: {exc}"))

    async def _handle_record(self, record: Any) -> None:
        loop = asyncio.get_running_loop()
        read_ts = time.time()
        try:
            request = await loop.run_in_executor(
                self._decoders,
                lambda: decode_record(
                    record,
                    self.config.cameras,
                    self._limits,
                    input_sizes=self._input_sizes,
                    budget=self._decode_budget,
                    read_ts=read_ts,
                ),
            )
        except ZsadError as exc:
            await self._dead_letter(record, exc)
            return
        if self.metrics is not None:
            self.metrics.stage("decode", request.decoded_ts - read_ts)
        await self._deliver(record, request)

    async def _deliver(self, record: Any, request: FrameRequest) -> None:
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
                        await self._dead_letter(record, ReplicaCrashedError(f"{crashes} replicas died holding it"))
                        return
                    self.counts["system_retries"] += 1
                    log.warning("%s: serving unavailable (%s), retrying frame %s", self.name, exc, request.frame_id)
                    await asyncio.sleep(min(0.1 * 2**system_failures, MAX_BACKOFF_S))
                    continue
            else:
                if ack.status != "failed":
                    self.counts[ack.status] += 1
                    self._finish(request.partition, request.offset)
                    return
                failures += 1
                detail = ack.error_detail
            self.counts["frame_retries"] += 1
            if failures > self.config.ingest.max_retries:
                await self._dead_letter(record, InferenceFailedError(f"{failures} attempts failed; last: {detail}"))
                return

    async def _dead_letter(self, record: Any, error: ZsadError) -> None:
        letter = DeadLetter.build(
            key=record.key,
            value=record.value,
            headers=record.headers,
            error=error,
            source_topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            dlq_topic=self.config.kafka.dlq_topic,
        )
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
                await asyncio.sleep(min(0.1 * 2**attempt, MAX_BACKOFF_S))
        reason = reason_code(error)
        self.counts["dead_lettered"] += 1
        self.dead_letter_reasons[reason] += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(_camera_of(record), reason)
        self._finish(record.partition, record.offset)

    def _send_letter(self, letter: DeadLetter) -> None:
        self._producer.send(letter.topic, key=letter.key, value=letter.value, headers=letter.headers).get(30)

    def _finish(self, partition: int, offset: int) -> None:
        self.tracker.finish(partition, offset)
        self._finished.set()

    async def _commit(self) -> None:
        from kafka.structs import OffsetAndMetadata, TopicPartition

        offsets = self.tracker.committable()
        if not offsets:
            return
        topic = self.config.kafka.frames_topic
        request = {TopicPartition(topic, p): OffsetAndMetadata(offset, "", -1) for p, offset in offsets.items()}
        try:
            await self._kafka(self._consumer.commit, request)
        except Exception as exc:  # noqa: BLE001 - a failed commit is retried with the next one
            log.warning("%s: commit failed (%s); will retry", self.name, exc)
            return
        self.tracker.mark_committed(offsets)
        self.committed.update(offsets)

    async def _measure_lag(self) -> None:
        try:
            ends = await self._kafka(self._consumer.end_offsets, list(self._consumer.assignment()), timeout_ms=5000)
        except Exception as exc:  # noqa: BLE001 - lag is informational; some brokers answer this badly
            log.debug("%s: end offsets unavailable: %s", self.name, exc)
            return
        for topic_partition, end in ends.items():
            position = self.committed.get(topic_partition.partition, 0)
            self.lag[topic_partition.partition] = max(int(end) - position, 0)
            if self.metrics is not None:
                self.metrics.lag(topic_partition.partition, self.lag[topic_partition.partition])

    async def _drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=0.5)
        await self._commit()

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        clients = [client for client in (self._consumer, self._producer) if client is not None]
        for client in clients:
            try:
                await self._kafka(client.close)
            except Exception as exc:  # noqa: BLE001 - closing is best effort
                log.debug("%s: close failed: %s", self.name, exc)
        self._consumer = self._producer = None

    def stats(self) -> dict[str, Any]:
        """Counters and positions, for ``zsad status`` and tests."""
        return {
            "name": self.name,
            "partitions": self.partitions,
            "running": self.running,
            "error": self.error,
            "in_flight": self.tracker.in_flight(),
            "paused": self._paused,
            "counts": dict(self.counts),
            "dead_letter_reasons": dict(self.dead_letter_reasons),
            "committed": dict(self.committed),
            "lag": dict(self.lag),
        }


def _camera_of(record: Any) -> str:
    try:
        return FrameHeaders.from_kafka(record.key, record.headers).camera
    except ZsadError:
        return "unknown"


class IngestActor:
    """The Ray actor around one :class:`IngestWorker` (created by the supervisor with restarts enabled).

    A restarted actor comes back through ``__init__`` with the same partitions; the supervisor's watch loop
    calls :meth:`ensure_running`, and the consumer resumes from the committed offsets.
    """

    def __init__(self, config: ZsadConfig, partitions: list[int], inspector: Any, name: str) -> None:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO

        async def submit(request: FrameRequest) -> FrameAck:
            return await inspector.score.remote(request)

        self.worker = IngestWorker(config, partitions, submit, name=name, metrics=PipelineMetrics())
        self._task: asyncio.Task[None] | None = None

    async def ensure_running(self) -> bool:
        """Start the loop if it is not running; True if it was started now."""
        if self._task is not None and not self._task.done():
            return False
        if self.worker.stopping:
            return False
        self._task = asyncio.get_running_loop().create_task(self.worker.run())
        return True

    async def stop(self, drain_timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop, commit what finished and report the final stats."""
        await self.worker.stop(drain_timeout_s)
        return self.worker.stats()

    async def stats(self) -> dict[str, Any]:
        """The worker's counters and positions."""
        return self.worker.stats()
