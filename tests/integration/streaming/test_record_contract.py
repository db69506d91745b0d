"""Frame-id conflicts on the real stack (noida broker, Redis, Ray Serve): of two records with one frame id and other
bytes, the one at the lower offset keeps the id, whichever is scored first, and the other is one dead letter."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import pytest
from kafka import KafkaProducer
from stream_helpers import (
    Deployment,
    committed_offsets,
    frame_bytes,
    read_topic,
    stream_config,
    wait_until,
)

from services.config import ZsadConfig
from services.frame_path.decoding import content_digest
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.records import (
    H_CAPTURE_TS,
    H_DLQ_DETAIL,
    H_DLQ_REASON,
    H_DLQ_SOURCE,
    encode_headers,
)
from services.stores.result_store import FrameResult

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Sent:
    """A record as produced: where it landed and what it carried."""

    partition: int
    offset: int
    frame_id: str
    payload: bytes
    headers: dict[str, bytes]


def send_raw(config: ZsadConfig, camera: str, records: list[tuple[str, bytes, list[tuple[str, bytes]]]]) -> list[Sent]:
    """Send ``(frame_id, payload, headers)`` records in order with plain kafka-python (only the documented contract).

    Each record's Kafka timestamp is its capture time, as a camera gateway that stamps records with it sends them.
    """
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers, acks="all")
    try:
        sent = []
        for frame_id, payload, headers in records:
            captured = int(float(dict(headers)[H_CAPTURE_TS]) * 1000)
            meta = producer.send(config.kafka.frames_topic, key=camera.encode(), value=payload, headers=headers,
                                 timestamp_ms=captured).get(30)  # fmt: skip
            sent.append(Sent(meta.partition, meta.offset, frame_id, payload, dict(headers)))
        return sent
    finally:
        producer.close()


def jpeg_headers(frame_id: str) -> list[tuple[str, bytes]]:
    return encode_headers(frame_id, time.time(), "image/jpeg")


def letters_by_source(config: ZsadConfig, expected: int) -> dict[str, list[dict[str, bytes]]]:
    """The dead letters, by the ``topic:partition:offset`` of the record they stand for."""
    found: dict[str, list[dict[str, bytes]]] = {}
    for record in read_topic(config.kafka, config.kafka.dlq_topic, expected=expected, timeout_s=10.0):
        headers = dict(record.headers)
        found.setdefault(headers[H_DLQ_SOURCE].decode(), []).append({**headers, "value": record.value or b""})
    return found


def wait_committed_past(config: ZsadConfig, sent: list[Sent]) -> None:
    """Wait until every partition written to has its offset committed past the last record sent to it."""
    last = {}
    for item in sent:
        last[item.partition] = max(last.get(item.partition, -1), item.offset)

    def done() -> bool:
        committed = committed_offsets(config)
        return all(committed.get(partition, -1) > offset for partition, offset in last.items())

    wait_until(done, 120, "every sent offset committed")


@pytest.mark.takes_long(
    reason="six conflicting pairs through the whole stream, half of them seeded in the reverse order,"
    " then every letter read back from the dead-letter topic"
)
def test_the_lower_offset_wins_every_frame_id_conflict(
    noida_broker: KafkaBroker, redis_server: RedisServer, deployments: list[Deployment], unique: str
) -> None:
    camera = f"cam-{unique}"
    config = stream_config(noida_broker, redis_server, unique, {camera: {"method": "clip-ad"}}, partitions=1,
                           num_actors=1, max_in_flight=32, max_batch_size=8)  # fmt: skip
    records = []
    for pair in range(6):  # good frame, A, B (same id, other bytes), in order on one partition
        records += [(f"good-{pair}", frame_bytes(1000 + pair), jpeg_headers(f"good-{pair}"))]
        records += [(f"pair-{pair}", frame_bytes(2000 + 2 * pair + side), jpeg_headers(f"pair-{pair}"))
                    for side in (0, 1)]  # fmt: skip
    sent = send_raw(config, camera, records)
    earlier = {item.frame_id: item for item in sent[1::3]}
    later = {item.frame_id: item for item in sent[2::3]}
    deployment = Deployment(config)
    deployments.append(deployment)
    # Half the pairs as if the later record had been scored first: its result is in Redis before ingest starts.
    for frame_id in list(later)[::2]:
        item = later[frame_id]
        deployment.store.write_result(FrameResult(camera, frame_id, score=0.9, threshold=0.5, method="clip-ad",
                                                  partition=item.partition, offset=item.offset,
                                                  digest=content_digest(item.payload)))  # fmt: skip
    deployment.deploy()
    wait_committed_past(config, sent)

    topic = config.kafka.frames_topic
    letters = letters_by_source(config, expected=len(later))
    assert sorted(letters) == sorted(f"{topic}:{item.partition}:{item.offset}" for item in later.values())
    for frame_id, item in earlier.items():
        result = deployment.store.get_result(camera, frame_id)
        assert (result.offset, result.digest) == (item.offset, content_digest(item.payload)), frame_id
        (letter,) = letters[f"{topic}:{later[frame_id].partition}:{later[frame_id].offset}"]
        assert letter[H_DLQ_REASON] == b"conflicting_frame_id"
        assert letter[H_DLQ_DETAIL].decode().endswith(f"kept: {topic}:{item.partition}:{item.offset}")
        assert letter["value"] == later[frame_id].payload  # the loser's bytes, also when its result was replaced
    events = Counter(event.frame_id for event in deployment.store.recent(camera, 100))
    assert events == Counter({item.frame_id: 1 for item in sent})  # one event per frame id, the kept result's
    counts = Counter()
    for actor in deployment.status()["actors"]:
        counts.update(actor["counts"])
    assert counts["replaced"] >= len(list(later)[::2])  # the seeded pairs, and any pair scored in reverse
