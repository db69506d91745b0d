"""Reading the dead-letter topic, and sending a letter's original record to the frames topic again (``zsad dlq``).

Why: a record that cannot be scored leaves the stream as one dead letter that keeps its key, bytes and headers.
An operator must be able to list the letters by camera and reason, look at one, and, once the cause is fixed (a
camera's encoder, a limit in the config), send the original record again, with no Kafka code of their own. The
reader is standalone (assign mode, no group), so it never moves the offsets of any consumer group.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord

from services.config import KafkaConfig, ZsadConfig
from services.frame_path.producer import FrameProducer
from services.records import (
    H_DLQ_DETAIL,
    H_DLQ_DROPPED,
    H_DLQ_REASON,
    H_DLQ_SOURCE,
    H_FRAME_ID,
    DeadLetter,
)
from zsad_core.errors import ZsadError

_POLL_MS = 200


class LetterError(ZsadError, LookupError):
    """A dead letter that does not exist, or cannot be sent again."""

    reason = "dead_letter"


@dataclass(frozen=True)
class Letter:
    """One dead letter: where it lies in the dead-letter topic (``partition:offset``), the record it stands for
    (``source``, ``topic:partition:offset``), why it was refused, and the original key, value and headers."""

    partition: int
    offset: int
    timestamp_ms: int
    camera: str
    frame_id: str
    reason: str
    detail: str
    source: str
    value_dropped: bool
    key: bytes | None = field(repr=False)
    value: bytes | None = field(repr=False)
    headers: list[tuple[str, bytes]] = field(repr=False)

    @property
    def address(self) -> str:
        """``partition:offset`` in the dead-letter topic: how ``zsad dlq show`` and ``resend`` name a letter."""
        return f"{self.partition}:{self.offset}"

    def summary(self) -> dict[str, object]:
        """What ``zsad dlq list --json`` prints (no payload)."""
        return {
            "letter": self.address,
            "time": self.timestamp_ms / 1000.0,
            "camera": self.camera,
            "frame_id": self.frame_id,
            "reason": self.reason,
            "detail": self.detail,
            "source": self.source,
            "value_bytes": len(self.value or b""),
            "value_dropped": self.value_dropped,
        }

    def original_headers(self) -> list[tuple[str, bytes]]:
        """The headers the record was produced with (the dead-letter ones removed)."""
        return [(name, raw) for name, raw in self.headers if not name.startswith("zsad-dlq-")]

    @classmethod
    def from_record(cls, record: ConsumerRecord) -> Letter:
        """The letter stored in a dead-letter topic record."""
        headers = [(name, raw or b"") for name, raw in record.headers or ()]
        stored = DeadLetter(topic=record.topic, key=record.key, value=record.value, headers=headers)
        return cls(
            partition=record.partition,
            offset=record.offset,
            timestamp_ms=record.timestamp,
            camera=(record.key or b"").decode("utf-8", "replace"),
            frame_id=stored.header(H_FRAME_ID) or "",
            reason=stored.header(H_DLQ_REASON) or "",
            detail=stored.header(H_DLQ_DETAIL) or "",
            source=stored.header(H_DLQ_SOURCE) or "",
            value_dropped=bool(stored.header(H_DLQ_DROPPED)),
            key=record.key,
            value=record.value,
            headers=headers,
        )


def parse_address(text: str) -> tuple[int, int]:
    """``"P:O"`` as ``(partition, offset)``.

    Raises:
        ValueError: not two non-negative integers separated by a colon.
    """
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ValueError(f"a dead letter is named PARTITION:OFFSET of the dead-letter topic, not {text!r}")
    return int(partition), int(offset)


def read_letters(
    kafka: KafkaConfig, *, camera: str | None = None, reason: str | None = None, timeout_s: float = 30.0
) -> list[Letter]:
    """Every letter in the dead-letter topic up to its current end, oldest first per partition, filtered by
    ``camera`` and ``reason`` when given.

    Raises:
        LetterError: the topic could not be read to its end within ``timeout_s``.
    """
    consumer = _reader(kafka, timeout_s)
    try:
        topic = kafka.dlq_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            return []
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records = _read_until(consumer, ends, time.monotonic() + timeout_s, topic)
    finally:
        consumer.close(autocommit=False)
    letters = [Letter.from_record(record) for record in records]
    return [letter for letter in letters
            if (camera is None or letter.camera == camera) and (reason is None or letter.reason == reason)]  # fmt: skip


def fetch_letters(kafka: KafkaConfig, addresses: Sequence[tuple[int, int]], timeout_s: float = 30.0) -> list[Letter]:
    """The letters at ``addresses`` (``(partition, offset)`` of the dead-letter topic), in that order.

    Raises:
        LetterError: one of them does not exist (never written, or past the topic's retention).
    """
    consumer = _reader(kafka, timeout_s)
    topic = kafka.dlq_topic
    found: dict[tuple[int, int], Letter] = {}
    try:
        for partition, offset in addresses:
            if (partition, offset) in found:
                continue
            tp = TopicPartition(topic, partition)
            if partition not in (consumer.partitions_for_topic(topic) or ()):
                raise LetterError(f"no dead letter {partition}:{offset}: {topic} has no partition {partition}")
            consumer.assign([tp])
            first, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
            if not first <= offset < end:
                raise LetterError(f"no dead letter {partition}:{offset}: {topic}:{partition} holds offsets "
                                  f"{first} to {end - 1}")  # fmt: skip
            consumer.seek(tp, offset)
            records = _read_until(consumer, {tp: offset + 1}, time.monotonic() + timeout_s, topic)
            record = next((r for r in records if r.offset == offset), None)
            if record is None:
                raise LetterError(f"no dead letter {partition}:{offset} in {topic} (compacted away?)")
            found[(partition, offset)] = Letter.from_record(record)
    finally:
        consumer.close(autocommit=False)
    return [found[address] for address in addresses]


@dataclass(frozen=True)
class Resent:
    """A letter's record sent to the frames topic again, and where it landed."""

    letter: Letter
    partition: int
    offset: int


def resend(config: ZsadConfig, letters: Iterable[Letter]) -> list[Resent]:
    """Send each letter's original record (key, bytes, headers) to the frames topic again, acknowledged by the
    brokers; ingest then reads it as any new record (same frame id: a record already stored is answered
    ``duplicate``, and one whose id another record kept is refused again).

    Raises:
        LetterError: a letter lost its bytes (they did not fit the dead-letter topic): nothing is sent.
    """
    letters = list(letters)
    for letter in letters:
        if letter.value_dropped or letter.value is None:
            raise LetterError(f"dead letter {letter.address} ({letter.source}) kept no image bytes (too large for "
                              "the dead-letter topic): send the frame again from its source")  # fmt: skip
    with FrameProducer.from_config(config) as producer:
        futures = [producer.send_original(letter.key, letter.value or b"", letter.original_headers())
                   for letter in letters]  # fmt: skip
        producer.flush()
        sent = [future.get(timeout=30) for future in futures]
    return [Resent(letter, meta.partition, meta.offset) for letter, meta in zip(letters, sent, strict=True)]


def _reader(kafka: KafkaConfig, timeout_s: float) -> KafkaConsumer:
    return KafkaConsumer(
        **kafka.reader_options("dlq-reader"),
        group_id=None,
        auto_offset_reset="earliest",
        bootstrap_timeout_ms=max(1, int(timeout_s * 1000)),
    )


def _read_until(
    consumer: KafkaConsumer, ends: dict[TopicPartition, int], deadline: float, topic: str
) -> list[ConsumerRecord]:
    records: list[ConsumerRecord] = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        if time.monotonic() > deadline:
            raise LetterError(f"{topic} could not be read to its end in time")
        for batch in consumer.poll(timeout_ms=_POLL_MS).values():
            records.extend(record for record in batch if record.offset < ends[TopicPartition(topic, record.partition)])
    return records
