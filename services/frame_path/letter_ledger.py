"""Which source offsets already have a dead letter, so that none is written twice, whoever reads next.

A dead letter and the commit that marks its offset done cannot be written atomically (the letter goes to the
dead-letter topic, the commit to the consumer group). An actor killed between the two would leave a letter the
next reader of the partition cannot know about, and that reader would write a second one. So the ledger
travels in each partition's commit metadata, as JSON, in two parts:

* ``dead_lettered``: offsets at or above the commit point whose letter the broker has acknowledged;
* ``lettering``: offsets whose letter is being written, announced by a commit *before* the letter is sent,
  with the dead-letter topic's end offsets at the first announcement (``dlq_from``).

A reader that finds an announced offset cannot tell whether its writer died before or after the send, so it
reads the dead-letter topic from ``dlq_from`` and looks for a letter naming that source offset and the same
consumer group (:func:`find_letters`): found, the offset is done; not found, the record is read again and
lettered. Brokers that drop commit metadata (Tansu) leave only the in-memory ledger of the running actor.

The metadata never outgrows what a broker accepts (:data:`~services.config.KAFKA_COMMIT_METADATA_MAX_BYTES`, or
the broker refuses the commit and the announcement is retried for ever). The announced offsets always fit: they
are frames in flight, and ``ingest.max_in_flight`` is bounded for that. The rest is kept as far as it fits, in
the order of its worth: the topic positions to search from (a partition left out is searched from its start),
then the lowest acknowledged offsets (one left out could be lettered a second time by the next reader).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from services.config import KAFKA_COMMIT_METADATA_MAX_BYTES, KafkaConfig
from services.records import H_DLQ_GROUP, H_DLQ_SOURCE

SCAN_TIMEOUT_S = 30.0  # longest read of the dead-letter topic when checking announced letters


class LetterCheckError(RuntimeError):
    """The dead-letter topic could not be read to the end in time: announced letters stay unknown."""


@dataclasses.dataclass
class PartitionLedger:
    """The letters of one partition: acknowledged, and announced (with where the topic ended then)."""

    lettered: set[int] = dataclasses.field(default_factory=set)
    announced: set[int] = dataclasses.field(default_factory=set)
    dlq_from: dict[int, int] = dataclasses.field(default_factory=dict)

    def metadata(self, commit_offset: int) -> str:
        """The commit metadata for a commit at ``commit_offset``: what is at or above it, at most
        :data:`~services.config.KAFKA_COMMIT_METADATA_MAX_BYTES` long (see the module's docstring)."""
        self.lettered.difference_update({offset for offset in self.lettered if offset < commit_offset})
        if not self.lettered and not self.announced:
            return ""
        document: dict[str, Any] = {}
        if self.announced:
            dlq_from: dict[str, int] = {}
            document["lettering"] = {"offsets": sorted(self.announced), "dlq_from": dlq_from}
            size = len(_encode(document))
            for partition, offset in sorted(self.dlq_from.items()):
                size += len(f'"{partition}":{offset},')
                if size > KAFKA_COMMIT_METADATA_MAX_BYTES:
                    break
                dlq_from[str(partition)] = offset
        lettered: list[int] = []
        size = len(_encode({**document, "dead_lettered": []}))
        for offset in sorted(self.lettered):
            size += len(str(offset)) + 1  # with its comma
            if size > KAFKA_COMMIT_METADATA_MAX_BYTES:
                break
            lettered.append(offset)
        if lettered:
            document["dead_lettered"] = lettered
        return _encode(document)

    def announce(self, offset: int, dlq_ends: dict[int, int]) -> None:
        """``offset``'s letter is about to be sent; ``dlq_ends`` is where the dead-letter topic ends now."""
        if not self.announced:
            self.dlq_from = dict(dlq_ends)  # with letters already announced, the earlier positions cover this one
        self.announced.add(offset)

    def acknowledged(self, offset: int) -> None:
        """The broker has ``offset``'s letter."""
        self.announced.discard(offset)
        if not self.announced:
            self.dlq_from = {}
        self.lettered.add(offset)

    def __contains__(self, offset: int) -> bool:
        return offset in self.lettered


def _encode(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def parse_metadata(metadata: str | None, committed: int) -> PartitionLedger:
    """The ledger a commit's metadata holds (empty for metadata written by another tool)."""
    try:
        document = json.loads(metadata or "{}")
        lettering = document.get("lettering") or {}
        lettered = {int(o) for o in document.get("dead_lettered", []) if isinstance(o, int) and o >= committed}
        announced = {int(o) for o in lettering.get("offsets", []) if isinstance(o, int) and o >= committed}
        dlq_from = {int(partition): int(offset) for partition, offset in lettering.get("dlq_from", {}).items()}
    except (ValueError, AttributeError, TypeError):
        return PartitionLedger()
    return PartitionLedger(lettered=lettered, announced=announced, dlq_from=dlq_from if announced else {})


def find_letters(
    kafka: KafkaConfig,
    dlq_from: dict[int, int],
    sources: set[str],
    *,
    fetch_bytes: int,
    timeout_s: float = SCAN_TIMEOUT_S,
) -> set[str]:
    """The ``topic:partition:offset`` sources among ``sources`` that have a letter of this group after ``dlq_from``.

    Partitions of the dead-letter topic missing from ``dlq_from`` (it did not exist, or grew) are read from their
    start.

    Raises:
        LetterCheckError: the topic was not read to its end within ``timeout_s``.
    """
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(**kafka.reader_options("letter-check"), auto_offset_reset="earliest",
                             fetch_max_bytes=kafka.receive_message_max_bytes,
                             max_partition_fetch_bytes=fetch_bytes)  # fmt: skip
    try:
        numbers = sorted(consumer.partitions_for_topic(kafka.dlq_topic) or ())
        partitions = [TopicPartition(kafka.dlq_topic, number) for number in numbers]
        if not partitions:
            return set()
        ends = consumer.end_offsets(partitions, timeout_ms=5000)
        consumer.assign(partitions)
        for tp in partitions:
            consumer.seek(tp, min(dlq_from.get(tp.partition, 0), ends[tp]))
        group = kafka.group_id.encode()
        found: set[str] = set()
        deadline = time.monotonic() + timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            if time.monotonic() > deadline:
                raise LetterCheckError(f"{kafka.dlq_topic} not read to its end within {timeout_s:.0f} s")
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    headers = dict(record.headers or ())
                    source = (headers.get(H_DLQ_SOURCE) or b"").decode("utf-8", "replace")
                    if source in sources and headers.get(H_DLQ_GROUP) == group:
                        found.add(source)
        return found
    finally:
        consumer.close()
