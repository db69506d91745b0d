"""Sending a record that cannot be scored to the dead-letter topic, once, whoever reads its partition next.

Why the ceremony around one send: the letter and the commit that marks its offset done cannot be written
atomically. So each letter is announced in a commit before it is sent and acknowledged in one after
(:mod:`services.frame_path.letter_ledger`), and a new reader of the partition looks up the letters announced
before it (:meth:`DeadLetterSender.recover`). A failed send is retried until the broker has it, and a letter
too large for the dead-letter topic goes without its payload (the bytes stay in the frames topic at the source
offset it names). The operators' side of the topic (list, show, resend) is :mod:`services.frame_path.dead_letters`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from services.backoff import backoff_s
from services.config import ZsadConfig
from services.frame_path.commit_ledger import CommitLedger
from services.frame_path.kafka_reader import FramesReader
from services.frame_path.letter_ledger import find_letters, parse_metadata
from services.frame_path.metrics import PipelineMetrics
from services.records import H_DLQ_DROPPED, DeadLetter, FrameHeaders, reason_code
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.1, 5.0)  # first and longest wait before a letter, an announcement or a frame is retried


class DeadLetterSender:
    """The dead letters of one ingest worker's partitions.

    Args:
        config: the system configuration (Kafka topics and group, the record size limit).
        reader: the worker's frames reader (its thread, its commits, the dead-letter topic's ends).
        commits: the worker's commit ledger, which carries each letter's announcement and acknowledgement.
        name: the worker's name, shown in logs.
        counts: the worker's counters; ``reasons``: its dead letters per reason.
        metrics: where to report; ``None`` outside Ray.
        finish: marks an offset done in the worker (``partition, offset, generation``).
        stopping: whether the worker is stopping (a letter not yet sent is then left for the next reader).
    """

    def __init__(
        self,
        config: ZsadConfig,
        reader: FramesReader,
        commits: CommitLedger,
        *,
        name: str,
        counts: Counter[str],
        reasons: Counter[str],
        metrics: PipelineMetrics | None,
        finish: Callable[[int, int, int], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.config = config
        self.reader = reader
        self.commits = commits
        self.name = name
        self.counts = counts
        self.reasons = reasons
        self.metrics = metrics
        self.finish = finish
        self.stopping = stopping
        self._producer: Any = None
        self._sending: set[tuple[int, int]] = set()  # (partition, offset) whose letter a task is sending now

    def open(self) -> None:
        """Open the producer (blocking: called on the reader's thread while the worker connects)."""
        from kafka import KafkaProducer

        kafka = self.config.kafka
        self._producer = KafkaProducer(
            **kafka.client_kwargs(),
            client_id=f"{kafka.client_id}-{self.name}-dlq",
            acks="all",
            max_request_size=max(self.config.limits.max_bytes * 2, 1 << 20),
        )

    def recover(self, partition: int, committed: int, metadata: str) -> None:
        """Seed ``partition``'s ledger from its commit metadata; announced letters are looked up in the topic.

        Blocking: runs on the reader's thread while connecting. An announced letter that is not in the
        dead-letter topic was never sent (its writer died first): its record is read again and lettered then.

        Raises:
            LetterCheckError: the dead-letter topic could not be read (the loop restarts with its backoff).
        """
        stored = parse_metadata(metadata, committed)
        ledger = self.commits.ledger(partition)
        ledger.lettered.update(stored.lettered)
        ledger.announced, ledger.dlq_from = set(), {}  # a new loop: the old loop's unsent announcements are void
        if not stored.announced:
            return
        topic = self.config.kafka.frames_topic
        sources = {f"{topic}:{partition}:{offset}": offset for offset in stored.announced}
        found = find_letters(self.config.kafka, stored.dlq_from, set(sources), fetch_bytes=self.reader.fetch_bytes)
        ledger.lettered.update(sources[source] for source in found)
        self.counts["announced_letters_found"] += len(found)
        log.info("%s: partition %d: %d of %d announced dead letters were written before the last reader stopped",
                 self.name, partition, len(found), len(sources))  # fmt: skip

    async def send(self, record: Any, error: ZsadError, generation: int | None) -> None:
        """Send ``record``'s dead letter and finish its offset (``generation`` ``None``: its own task finishes it)."""
        source = (record.partition, record.offset)
        if source in self._sending or self.commits.lettered(record.partition, record.offset):
            # Lettered already, or being lettered: a replaced result's record, by the frame that took its id.
            if generation is not None:
                self.finish(record.partition, record.offset, generation)
            return
        self._sending.add(source)
        try:
            await self._send_once(record, error, generation)
        finally:
            self._sending.discard(source)

    async def _send_once(self, record: Any, error: ZsadError, generation: int | None) -> None:
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
                await loop.run_in_executor(None, self._send, letter)
                break
            except Exception as exc:  # noqa: BLE001 - the broker is down: the record stays unfinished meanwhile
                attempt += 1
                if self.stopping():
                    return
                if not getattr(exc, "retriable", True) and letter.value:
                    # e.g. the copy with our headers exceeds the broker's message size: keep the reason, drop
                    # the payload (it is still in the frames topic at the source offset named in the headers).
                    letter = dataclasses.replace(letter, value=None, headers=[*letter.headers, (H_DLQ_DROPPED, b"1")])
                log.warning("%s: dead-letter send failed (%s), retrying", self.name, exc)
                await asyncio.sleep(backoff_s(attempt, *RETRY_BACKOFF_S))
        reason = reason_code(error)
        self.counts["dead_lettered"] += 1
        self.reasons[reason] += 1
        if self.metrics is not None:
            self.metrics.dead_lettered(_camera_of(record), reason)
        self.commits.ledger(record.partition).acknowledged(record.offset)
        if generation is not None:
            self.finish(record.partition, record.offset, generation)
        # Commit now (the offset, or the letter in the commit's metadata): nothing may re-read it and write a
        # second letter, even if this loop dies right after.
        await self.commits.commit(self.reader)

    async def _announce(self, partition: int, offset: int) -> bool:
        """Commit that ``offset``'s letter is about to be sent (see :mod:`services.frame_path.letter_ledger`).

        Retried until the broker has it: a letter sent without it could be written again by the next reader.
        Returns ``False`` only when the worker stops first.
        """
        attempt = 0
        while not self.stopping():
            ledger = self.commits.ledger(partition)
            try:
                if offset not in ledger.announced:
                    # Where the dead-letter topic ends now; not asked while letters announced earlier pin an
                    # earlier position to search from (the ledger keeps that one).
                    ends = {} if ledger.announced else await self.reader.topic_ends(self.config.kafka.dlq_topic)
                    ledger.announce(offset, ends)
            except Exception as exc:  # noqa: BLE001 - the broker is away; so is the letter's destination
                log.warning("%s: dead-letter topic unreadable (%s), retrying", self.name, exc)
            else:
                if await self.commits.commit(self.reader):
                    return True
            attempt += 1
            await asyncio.sleep(backoff_s(attempt, *RETRY_BACKOFF_S))
        return False

    def _send(self, letter: DeadLetter) -> None:
        self._producer.send(letter.topic, key=letter.key, value=letter.value, headers=letter.headers).get(30)

    async def close(self) -> None:
        """Close the producer (best effort); :meth:`open` opens a new one."""
        producer, self._producer = self._producer, None
        if producer is not None:
            await self.reader.call(producer.close)


def _camera_of(record: Any) -> str:
    try:
        return FrameHeaders.from_kafka(record.key, record.headers).camera
    except ZsadError:
        return "unknown"
