"""Re-scoring a range of one camera's frames from Kafka: the operator's repair after Redis lost results.

Why it is safe to run at any time: Kafka still holds the frames after their offsets were committed, and the
result store writes idempotently (a frame whose result exists is acknowledged as a duplicate without a model
call). Replaying a range therefore restores exactly the frames whose results are missing and changes nothing
else, even while ingest keeps running.

Frames go through the running Serve ``Inspector``, the same replicas, methods and prompt versions as live
traffic, so a restored result is what ingest would have stored now (a newer prompt version than the lost
result may have had). What replay does to the event stream: each frame it restores appends one event, as its
first scoring did, and a frame whose result exists appends none. If Redis lost everything, the stream then
holds one event per frame again; if only results were deleted while the stream survived, consumers see the
restored frames a second time and deduplicate by ``frame_id``, as they must for at-least-once delivery anyway.

Records that fail validation are counted and skipped: ingest sent them to the dead-letter topic when it first
read them, and a replay does not dead-letter them twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from services.config import ZsadConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import FrameAck, FrameRequest, decode_record, model_input_sizes
from services.frame_path.producer import record_limit
from services.stores.result_store import ResultStore
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

# Frames in flight to the Inspector at once: enough to fill its batches, few enough to bound memory.
REPLAY_WINDOW = 16
_POLL_MS = 500
_IDLE_POLLS = 20  # consecutive empty polls before the broker counts as not delivering the range


class ReplayError(ZsadError, RuntimeError):
    """A replay cannot start or finish: a bad range, no broker, or the broker stops delivering the range."""

    reason = "replay"


@dataclass
class ReplayReport:
    """What :func:`replay_frames` did.

    Attributes:
        camera: the camera replayed.
        partition: the frames topic partition that holds the camera's frames.
        first_offset: where reading started.
        end_offset: the partition's end when the replay started; later frames are left to ingest.
        frames: records of this camera in the range.
        restored: frames scored and stored anew.
        already_stored: frames whose result existed (no model call, no write, no event).
        invalid: records that fail validation (dead-lettered when ingest first read them).
        failed: frames the model failed on; ``failures`` holds the reasons.
    """

    camera: str
    partition: int
    first_offset: int
    end_offset: int
    frames: int = 0
    restored: int = 0
    already_stored: int = 0
    invalid: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)


def camera_partition(camera: str, partitions: int) -> int:
    """The partition a camera's frames land on: the Kafka default partitioner's hash of the key.

    Why computed and not searched for: every Kafka client's default partitioner maps a key to
    ``murmur2(key) mod partitions``, so the camera id alone names the partition of every frame it sent.
    """
    return (murmur2(camera.encode()) & 0x7FFFFFFF) % partitions


def replay_frames(
    config: ZsadConfig,
    camera: str,
    *,
    inspector: Any,
    since: float | None = None,
    from_offset: int | None = None,
    timeout_s: float = 600.0,
) -> ReplayReport:
    """Re-score the camera's frames from ``since`` (epoch seconds) or ``from_offset`` up to the current end.

    Args:
        config: the running system's configuration (Kafka, Redis, cameras, limits).
        camera: a configured camera.
        since: replay frames the broker appended at or after this time (Kafka record timestamps).
        from_offset: replay from this offset of the camera's partition (clamped to the first retained one).
        inspector: a handle to the running Serve application's ``Inspector`` (the CLI opens it with
            :func:`services.cli.serve_calls.serve_deployment`, as every command that calls the application does).
        timeout_s: overall limit.

    Returns:
        The :class:`ReplayReport`.

    Raises:
        ReplayError: neither or both of ``since`` and ``from_offset``, a negative offset, the broker unreachable,
            or the timeout.
        UnknownCameraError: the camera is not configured.
    """
    if (since is None) == (from_offset is None):
        raise ReplayError("give exactly one of since (a time) and from_offset")
    if from_offset is not None and from_offset < 0:
        raise ReplayError(f"from_offset must be >= 0, got {from_offset}")
    config.camera(camera)
    deadline = time.monotonic() + timeout_s
    consumer = _consumer(config)
    try:
        partitions = consumer.partitions_for_topic(config.kafka.frames_topic)
        if not partitions:
            raise ReplayError(f"topic {config.kafka.frames_topic} does not exist on the broker")
        tp = TopicPartition(config.kafka.frames_topic, camera_partition(camera, len(partitions)))
        first, end = _range(consumer, tp, since, from_offset)
        report = ReplayReport(camera, tp.partition, first, end)
        if first < end:
            consumer.assign([tp])
            consumer.seek(tp, first)
            store = ResultStore.from_config(config)
            try:
                _replay(config, consumer, tp, end, deadline, inspector, store, report)
            finally:
                store.close()
    except KafkaError as exc:
        raise ReplayError(f"reading {config.kafka.frames_topic} failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
    log.info("replay of %s: %s", camera, report)
    return report


def _consumer(config: ZsadConfig) -> KafkaConsumer:
    kafka = config.kafka
    try:
        # No group: a standalone reader that cannot move the ingest group's offsets.
        return KafkaConsumer(
            **kafka.reader_options("replay"),
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_bytes=kafka.receive_message_max_bytes,
            max_partition_fetch_bytes=2 * record_limit(config.limits),
        )
    except KafkaError as exc:
        raise ReplayError(f"cannot reach the Kafka broker {kafka.bootstrap_servers}: {exc}") from exc


def _range(
    consumer: KafkaConsumer, tp: TopicPartition, since: float | None, from_offset: int | None
) -> tuple[int, int]:
    beginning = consumer.beginning_offsets([tp])[tp]
    end = consumer.end_offsets([tp])[tp]
    if from_offset is not None:
        return max(from_offset, beginning), end
    assert since is not None
    found = consumer.offsets_for_times({tp: int(since * 1000)})[tp]
    return (end, end) if found is None else (max(found.offset, beginning), end)


def _replay(
    config: ZsadConfig,
    consumer: KafkaConsumer,
    tp: TopicPartition,
    end: int,
    deadline: float,
    inspector: Any,
    store: ResultStore,
    report: ReplayReport,
) -> None:
    limits = config.limits.image_limits()
    sizes = {report.camera: model_input_sizes({report.camera: config.camera(report.camera)})[report.camera]}
    budget = DecodeBudget(config.ingest.decode_budget_pixels)
    window: list[FrameRequest] = []
    for record in _records(consumer, tp, end, deadline):
        if record.key != report.camera.encode():
            continue  # another camera hashed to the same partition
        report.frames += 1
        try:
            window.append(decode_record(record, config.cameras, limits, input_sizes=sizes, budget=budget))
        except ZsadError:
            report.invalid += 1
            continue
        if len(window) >= REPLAY_WINDOW:
            _score(window, inspector, store, report)
            window = []
    _score(window, inspector, store, report)


def _records(consumer: KafkaConsumer, tp: TopicPartition, end: int, deadline: float) -> Iterator[Any]:
    """The records of ``tp`` from the current position up to ``end`` (exclusive)."""
    idle = 0
    while consumer.position(tp) < end:
        if time.monotonic() > deadline:
            raise ReplayError(f"replay timed out at offset {consumer.position(tp)} of {tp.topic}:{tp.partition}")
        records = consumer.poll(timeout_ms=_POLL_MS).get(tp, [])
        idle = 0 if records else idle + 1
        if idle >= _IDLE_POLLS:
            raise ReplayError(f"the broker delivers nothing at offset {consumer.position(tp)} of {tp}")
        yield from (record for record in records if record.offset < end)


def _score(window: list[FrameRequest], inspector: Any, store: ResultStore, report: ReplayReport) -> None:
    """Send the frames without a result to the Inspector concurrently (they share its batches)."""
    if not window:
        return
    known = store.stored([(request.camera, request.frame_id) for request in window])
    missing = [request for request, exists in zip(window, known, strict=True) if not exists]
    report.already_stored += len(window) - len(missing)
    responses = [inspector.score.remote(request) for request in missing]
    for response in responses:
        ack: FrameAck = response.result()
        if ack.status in ("stored", "replaced"):  # replaced: the record read later held its id
            report.restored += 1
        elif ack.status in ("duplicate", "conflict"):  # stored meanwhile; conflict: an earlier record holds the id
            report.already_stored += 1
        else:
            report.failed += 1
            report.failures.append(f"{ack.frame_id}: {ack.error_reason} {ack.error_detail}".strip())
