"""The lag an ingest worker reports for its partitions, measured from what the group has committed.

Kafka is a fake consumer (the positions and log ends a broker would answer), so the test sees only what the
worker computes from them: the integration tests cover the real brokers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kafka
import pytest
from kafka.structs import OffsetAndMetadata

from services.config import ZsadConfig
from services.frame_path.decoding import FrameAck, FrameRequest
from services.frame_path.ingest_loop import IngestWorker

TOPIC = "frames"
COMMITTED = {0: 7, 1: 3}  # what the partitions' previous reader committed
LOG_END = {0: 7, 1: 3}  # nothing was written since: both partitions are idle


class Broker:
    """A consumer group that committed :data:`COMMITTED` on a topic that ends at :data:`LOG_END`."""

    def __init__(self) -> None:
        self.commits: list[dict[Any, Any]] = []


class FakeConsumer:
    def __init__(self, broker: Broker, **_options: Any) -> None:
        self.broker = broker
        self.assigned: list[Any] = []

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = list(partitions)

    def assignment(self) -> set[Any]:
        return set(self.assigned)

    def committed(self, tp: Any, metadata: bool = False) -> OffsetAndMetadata | None:
        offset = COMMITTED.get(tp.partition)
        return None if offset is None else OffsetAndMetadata(offset, "", -1)

    def seek(self, tp: Any, offset: int) -> None:
        pass

    def seek_to_beginning(self, *partitions: Any) -> None:
        pass

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, list[Any]]:
        return {}

    def pause(self, *partitions: Any) -> None:
        pass

    def resume(self, *partitions: Any) -> None:
        pass

    def end_offsets(self, partitions: list[Any], timeout_ms: int | None = None) -> dict[Any, int]:
        return {tp: LOG_END[tp.partition] for tp in partitions}

    def commit(self, offsets: dict[Any, Any]) -> None:
        self.broker.commits.append(offsets)

    def close(self, autocommit: bool = True) -> None:
        pass


class FakeProducer:
    def __init__(self, **_options: Any) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    broker = Broker()
    monkeypatch.setattr(kafka, "KafkaConsumer", lambda **options: FakeConsumer(broker, **options))
    monkeypatch.setattr(kafka, "KafkaProducer", FakeProducer)
    return broker


async def never_called(request: FrameRequest) -> FrameAck:
    raise AssertionError(f"no frame was written, yet {request.frame_id} was submitted")


def test_an_idle_partition_taken_over_from_another_reader_shows_no_lag(broker: Broker) -> None:
    config = ZsadConfig(
        kafka={"bootstrap_servers": ["127.0.0.1:9092"], "frames_topic": TOPIC},
        cameras={"cam": {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": 224}},
    )
    worker = IngestWorker(config, [0, 1], never_called, name="next-owner")  # after a rebalance: a new worker

    async def measure_once() -> None:
        task = asyncio.ensure_future(worker.run())
        while not worker.lag and not task.done():
            await asyncio.sleep(0.01)
        await worker.stop(drain_timeout_s=1.0)
        await task

    asyncio.run(measure_once())
    stats = worker.stats()
    assert stats["lag"] == {0: 0, 1: 0}
    assert stats["committed"] == COMMITTED
    assert stats["committed_past_end"] == {}
    assert broker.commits == []  # nothing was read, so nothing was committed again
