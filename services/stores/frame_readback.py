"""Reading one frame back from the frames topic by its partition and offset.

Why: Redis keeps a frame's result and map but not the image (frames are large and Kafka already retains
them); the result hash records where the frame was read, so any command that needs the pixels again
(``zsad show``, a replay) fetches that single record, as ingest does for the record whose result another
record with the same frame id replaced (its dead letter carries the original bytes). A standalone consumer in
assign mode with no group id reads it without joining, rebalancing or committing anything, so it cannot
disturb the ingest group.
"""

from __future__ import annotations

import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from services.config import KafkaConfig
from services.records import FrameHeaders
from zsad_core.errors import ZsadError

DEFAULT_TIMEOUT_S = 10.0
_POLL_MS = 200


class FrameUnavailableError(ZsadError, LookupError):
    """The frame cannot be read back: record expired, not a frame, another frame, or the broker is unreachable."""

    reason = "frame_unavailable"


def fetch_frame(
    kafka: KafkaConfig,
    partition: int,
    offset: int,
    frame_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    camera: str | None = None,
) -> bytes:
    """The encoded image of the record at ``partition``/``offset`` of the frames topic.

    Args:
        kafka: connection settings and the frames topic.
        partition, offset: where the frame was read (as stored with its result).
        frame_id: the frame expected there; a record with another id is refused, since offsets are reused
            when a topic is deleted and re-created.
        timeout_s: overall limit, connection included.
        camera: if given, the record key must name this camera too.

    Returns:
        The record value: the image bytes exactly as produced (not decoded, so callers apply their limits).

    Raises:
        FrameUnavailableError: the message says why (offset out of the retained range, id mismatch, invalid
            headers, timeout, broker error).
    """
    return fetch_record(kafka, partition, offset, frame_id, timeout_s, camera=camera).value


def fetch_record(
    kafka: KafkaConfig,
    partition: int,
    offset: int,
    frame_id: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    camera: str | None = None,
) -> ConsumerRecord:
    """The whole record (key, value, headers) at ``partition``/``offset``, checked as :func:`fetch_frame` does."""
    where = f"{kafka.frames_topic}:{partition}:{offset}"
    if partition < 0 or offset < 0:
        raise FrameUnavailableError(f"frame {frame_id} has no Kafka position (partition {partition}, offset {offset})")
    deadline = time.monotonic() + timeout_s
    try:
        consumer = KafkaConsumer(
            **kafka.reader_options("frame-lookup"),
            group_id=None,
            auto_offset_reset="none",  # never jump to another offset silently
            bootstrap_timeout_ms=max(1, int(timeout_s * 1000)),
        )
    except KafkaError as exc:
        raise FrameUnavailableError(f"cannot reach the Kafka broker to read {where}: {exc}") from exc
    try:
        record = _read_record(consumer, TopicPartition(kafka.frames_topic, partition), offset, deadline)
    except KafkaError as exc:
        raise FrameUnavailableError(f"reading record {where} failed: {exc}") from exc
    finally:
        consumer.close(autocommit=False)
    _check_identity(where, frame_id, camera, record)
    return record


def _read_record(consumer: KafkaConsumer, tp: TopicPartition, offset: int, deadline: float) -> ConsumerRecord:
    where = f"{tp.topic}:{tp.partition}:{offset}"
    if tp.partition not in consumer.partitions_for_topic(tp.topic):
        raise FrameUnavailableError(f"topic {tp.topic} has no partition {tp.partition} (record {where})")
    consumer.assign([tp])
    remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))
    first = consumer.beginning_offsets([tp], timeout_ms=remaining_ms)[tp]
    end = consumer.end_offsets([tp], timeout_ms=remaining_ms)[tp]
    if not first <= offset < end:
        raise FrameUnavailableError(f"record {where} is not in the topic (it retains offsets {first} to {end - 1})")
    consumer.seek(tp, offset)
    while time.monotonic() < deadline:
        records = consumer.poll(timeout_ms=_POLL_MS).get(tp)
        if records:  # the consumer drops records before the seek position, so the first is ours if it exists
            if records[0].offset != offset:
                raise FrameUnavailableError(f"record {where} is gone (next record: offset {records[0].offset})")
            return records[0]
    raise FrameUnavailableError(f"record {where} did not arrive within the timeout")


def _check_identity(where: str, frame_id: str, camera: str | None, record: ConsumerRecord) -> None:
    try:
        meta = FrameHeaders.from_kafka(record.key, record.headers)
    except ZsadError as exc:
        raise FrameUnavailableError(f"record {where} is not a valid frame: {exc}") from exc
    if meta.frame_id != frame_id:
        raise FrameUnavailableError(f"record {where} holds frame {meta.frame_id!r}, not {frame_id!r}")
    if camera is not None and meta.camera != camera:
        raise FrameUnavailableError(f"record {where} belongs to camera {meta.camera!r}, not {camera!r}")
    if not record.value:
        raise FrameUnavailableError(f"record {where} has no image bytes")
