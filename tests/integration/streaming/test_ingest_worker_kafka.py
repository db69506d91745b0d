"""The ingest loop alone on a real broker: what the Kafka client cannot read, positions outside the log, and dead
letters that must not be written twice.

Serving is replaced by the worker's own ``submit`` argument (the seam through which the Serve handle is passed in
production), so each test decides which frames finish and when; Kafka is the real noida-db broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition
from stream_helpers import committed_offsets, end_offsets, frame_bytes, read_topic, stream_config, wait_until

from services.audit_log import append_audit, audit_key
from services.config import ZsadConfig
from services.frame_path.decoding import FrameAck, FrameRequest
from services.frame_path.ingest_loop import IngestWorker
from services.frame_path.inspector import InspectorCore, ReplicaUnhealthyError
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.records import H_DLQ_REASON, H_DLQ_SOURCE, encode_headers
from services.stores.result_store import ResultStore
from zsad_core.imageio import encode_jpeg

pytestmark = pytest.mark.integration


class RawHeaderName(str):
    """A header name that kafka-python writes as the given raw bytes (the client refuses non-UTF-8 names
    otherwise), to put on the wire a record that an independent producer could send."""

    raw: bytes

    def __new__(cls, raw: bytes) -> RawHeaderName:
        name = super().__new__(cls, "zsad-raw")
        name.raw = raw
        return name

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return self.raw


class Serving:
    """Records what was submitted; frames whose offset is held wait until released."""

    def __init__(self, held: set[tuple[int, int]] | None = None) -> None:
        self.submitted: list[tuple[int, int]] = []
        self.held = held or set()
        self.release = asyncio.Event()

    async def submit(self, request: FrameRequest) -> FrameAck:
        self.submitted.append((request.partition, request.offset))
        if (request.partition, request.offset) in self.held:
            await self.release.wait()
        return FrameAck(request.camera, request.frame_id, request.partition, request.offset, status="stored")


def send(config: ZsadConfig, partition: int, value: bytes, frame_id: str, headers: list[Any] | None = None) -> None:
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        camera = next(iter(config.cameras))
        headers = encode_headers(frame_id, 1.0e9, "image/jpeg") if headers is None else headers
        producer.send(config.kafka.frames_topic, key=camera.encode(), value=value, headers=headers,
                      partition=partition).get(timeout=30)  # fmt: skip
    finally:
        producer.close()


def commit(config: ZsadConfig, offsets: dict[int, int]) -> None:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.kafka.group_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        topic = config.kafka.frames_topic
        consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
    finally:
        consumer.close()


async def run_until(worker: IngestWorker, done: Callable[[], bool], timeout_s: float = 60.0) -> asyncio.Task[None]:
    """Start the worker's loop and wait for ``done``; returns the running task."""
    task = asyncio.ensure_future(worker.run())
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not done():
        if task.done():
            task.result()  # the loop died: show why
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; worker stats: {worker.stats()}")
        await asyncio.sleep(0.05)
    return task


async def stop(worker: IngestWorker, task: Awaitable[None]) -> None:
    await worker.stop(drain_timeout_s=5.0)
    await task


def letters(config: ZsadConfig) -> list[tuple[str, str]]:
    """``(reason, source)`` of every dead letter, the topic read to its end; called once every worker stopped
    (a letter is sent and acknowledged before its worker moves on, so nothing more can arrive)."""
    lettered = sum(end_offsets(config, config.kafka.dlq_topic).values())
    records = read_topic(config.kafka, config.kafka.dlq_topic, expected=lettered, timeout_s=30.0)
    assert len(records) == lettered
    return sorted((dict(r.headers)[H_DLQ_REASON].decode(), dict(r.headers)[H_DLQ_SOURCE].decode()) for r in records)


@pytest.fixture
def config(noida_broker: KafkaBroker, redis_server: RedisServer, unique: str) -> ZsadConfig:
    return stream_config(noida_broker, redis_server, unique, {f"cam-{unique}": {"method": "clip-ad"}}, partitions=2,
                         num_actors=1, max_in_flight=4)  # fmt: skip


def test_an_unparseable_record_is_dead_lettered_once_and_skipped_while_the_other_partition_flows(
    config: ZsadConfig,
) -> None:
    for index in range(3):
        send(config, 0, frame_bytes(index), f"p0-{index}")
    send(config, 0, b"not an image", "p0-text")  # a bad frame just before the unreadable record
    send(config, 0, frame_bytes(9), "p0-raw", headers=[(RawHeaderName(b"zsad-\xff\xfe"), b"x")])  # offset 4
    for index in range(3):
        send(config, 0, frame_bytes(10 + index), f"p0-after-{index}")
        send(config, 1, frame_bytes(20 + index), f"p1-{index}")
    serving = Serving()
    worker = IngestWorker(config, [0, 1], serving.submit, name="t")

    async def scenario() -> None:
        task = await run_until(worker, lambda: worker.commits.committed == {0: 8, 1: 3})
        await asyncio.sleep(1.0)  # a loop that still failed would now restart and write the letters again
        await stop(worker, task)

    asyncio.run(scenario())
    topic = config.kafka.frames_topic
    assert letters(config) == [("not_an_image", f"{topic}:0:3"), ("unparseable_record", f"{topic}:0:4")]
    assert sorted(serving.submitted) == [(0, 0), (0, 1), (0, 2), (0, 5), (0, 6), (0, 7), (1, 0), (1, 1), (1, 2)]
    assert committed_offsets(config) == end_offsets(config) == {0: 8, 1: 3}
    stats = worker.stats()
    assert stats["counts"]["unparseable"] == 1 and stats["dead_letter_reasons"] == {
        "not_an_image": 1, "unparseable_record": 1,
    }  # fmt: skip
    assert stats["error"] == "" and stats["stopped_partitions"] == {}


def test_a_dead_letter_is_not_written_again_by_the_next_reader_of_its_partition(config: ZsadConfig) -> None:
    send(config, 0, frame_bytes(1), "held")  # offset 0 stays in flight, so the commit point cannot pass it
    send(config, 0, b"not an image", "bad")  # offset 1: dead-lettered while 0 is pending
    send(config, 0, frame_bytes(2), "good")
    holding = Serving(held={(0, 0)})
    first = IngestWorker(config, [0], holding.submit, name="first")
    tp = TopicPartition(config.kafka.frames_topic, 0)

    def letter_committed() -> bool:
        consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.kafka.group_id)
        try:
            committed = consumer.committed(tp, metadata=True)
        finally:
            consumer.close()
        return committed is not None and json.loads(committed.metadata or "{}").get("dead_lettered") == [1]

    async def crash_then_resume() -> IngestWorker:
        task = await run_until(first, letter_committed)
        task.cancel()  # the actor dies: nothing drains, offset 0 was never finished
        with pytest.raises(asyncio.CancelledError):
            await task
        assert committed_offsets(config)[0] == 0
        second = IngestWorker(config, [0], Serving().submit, name="second")  # the restarted actor's new worker
        task = await run_until(second, lambda: second.commits.committed.get(0) == 3)
        await stop(second, task)
        return second

    second = asyncio.run(crash_then_resume())
    assert letters(config) == [("not_an_image", f"{config.kafka.frames_topic}:0:1")]
    assert second.stats()["counts"]["dead_letter_replays_skipped"] == 1
    assert "dead_lettered" not in second.stats()["counts"]


class DiesAfterTheLetter(IngestWorker):
    """An ingest worker whose actor is killed right after the broker acknowledged a dead letter, before the
    commit that marks its offset done: the send blocks after it returned until the test kills the loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.letter_sent = threading.Event()
        self.killed = threading.Event()
        send = self.letter_sender._send

        def send_then_die(letter: Any) -> None:
            send(letter)
            self.letter_sent.set()
            self.killed.wait(30)

        self.letter_sender._send = send_then_die  # type: ignore[method-assign]


def test_a_dead_letter_whose_writer_died_before_its_commit_is_not_written_again(config: ZsadConfig) -> None:
    send(config, 0, frame_bytes(1), "good")
    send(config, 0, b"not an image", "bad")  # offset 1
    send(config, 0, frame_bytes(2), "after")
    first = DiesAfterTheLetter(config, [0], Serving().submit, name="first")

    async def kill_then_resume() -> IngestWorker:
        task = await run_until(first, first.letter_sent.is_set)
        task.cancel()  # the actor dies with the letter on the broker and its offset not committed
        with contextlib.suppress(asyncio.CancelledError):
            await task
        first.killed.set()
        assert committed_offsets(config).get(0, 0) <= 1
        second = IngestWorker(config, [0], Serving().submit, name="second")
        task = await run_until(second, lambda: second.commits.committed.get(0) == 3)
        await stop(second, task)
        return second

    second = asyncio.run(kill_then_resume())
    assert letters(config) == [("not_an_image", f"{config.kafka.frames_topic}:0:1")]
    counts = second.stats()["counts"]
    assert counts["announced_letters_found"] == 1 and counts["dead_letter_replays_skipped"] == 1
    assert "dead_lettered" not in counts


def test_an_announced_letter_that_was_never_sent_is_written_by_the_next_reader(config: ZsadConfig) -> None:
    send(config, 0, frame_bytes(1), "good")
    send(config, 0, b"not an image", "bad")  # offset 1
    dlq = TopicPartition(config.kafka.dlq_topic, 0)
    announced = json.dumps({"lettering": {"offsets": [1], "dlq_from": {"0": end_of(config, dlq)}}})
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.kafka.group_id,
                             enable_auto_commit=False)  # fmt: skip
    try:  # a writer that died after announcing the letter, before sending it
        consumer.commit({TopicPartition(config.kafka.frames_topic, 0): OffsetAndMetadata(1, announced, -1)})
    finally:
        consumer.close()
    worker = IngestWorker(config, [0], Serving().submit, name="next")

    async def scenario() -> None:
        task = await run_until(worker, lambda: worker.commits.committed.get(0) == 2)
        await stop(worker, task)

    asyncio.run(scenario())
    assert letters(config) == [("not_an_image", f"{config.kafka.frames_topic}:0:1")]
    assert worker.stats()["counts"]["dead_lettered"] == 1
    assert worker.stats()["counts"].get("announced_letters_found", 0) == 0  # looked, found none


def end_of(config: ZsadConfig, tp: TopicPartition) -> int:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        return int(consumer.end_offsets([tp])[tp])
    finally:
        consumer.close()


@pytest.mark.parametrize(
    ("policy", "read_from_p0", "committed_p0"),
    [("earliest", [0, 1, 2, 3, 4], 5), ("latest", [], 5), ("fail", [], 100)],
)
def test_a_position_past_the_log_end_follows_the_policy_and_is_audited(
    config: ZsadConfig, policy: str, read_from_p0: list[int], committed_p0: int
) -> None:
    config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"on_offset_out_of_range": policy})})
    for index in range(5):
        send(config, 0, frame_bytes(index), f"p0-{index}")
    for index in range(3):
        send(config, 1, frame_bytes(10 + index), f"p1-{index}")
    commit(config, {0: 100, 1: 0})  # as after a broker that lost the partition's records
    serving = Serving()
    audit: list[dict[str, str]] = []
    worker = IngestWorker(config, [0, 1], serving.submit, name="t", audit=audit.append)

    async def scenario() -> None:
        committed = worker.commits.committed  # partition 0 under "fail": where the group stood, untouched
        task = await run_until(worker, lambda: committed.get(1) == 3 and committed.get(0) == committed_p0)
        await asyncio.sleep(0.5)
        await stop(worker, task)

    asyncio.run(scenario())
    assert sorted(offset for partition, offset in serving.submitted if partition == 0) == read_from_p0
    assert sorted(offset for partition, offset in serving.submitted if partition == 1) == [0, 1, 2]
    assert committed_offsets(config) == {0: committed_p0, 1: 3}
    assert worker.stats()["counts"]["offset_resets"] == 1
    target = {"earliest": "0", "latest": "5", "fail": "100"}[policy]
    assert audit == [{"action": "offset_out_of_range", "actor": "t", "partition": "0", "from_offset": "100",
                      "to_offset": target, "log_start": "0", "log_end": "5", "policy": policy}]  # fmt: skip
    assert (0 in worker.stats()["stopped_partitions"]) == (policy == "fail")
    if policy == "fail":  # the stopped partition's commit is where the group stood: 95 records past the log end
        assert worker.stats()["committed_past_end"] == {0: 95}


def test_an_audit_write_that_hangs_stalls_no_partition(
    config: ZsadConfig, redis_server: RedisServer, unique: str
) -> None:
    send(config, 0, frame_bytes(0), "p0-0")
    for index in range(3):
        send(config, 1, frame_bytes(10 + index), f"p1-{index}")
    commit(config, {0: 100, 1: 0})  # partition 0's position is past its log end: its reset is audited
    client = redis_server.client()
    stream = audit_key(f"ns-{unique}")
    worker = IngestWorker(config, [0, 1], Serving().submit, name="t",
                          audit=lambda entry: append_audit(client, f"ns-{unique}", entry))  # fmt: skip

    async def scenario() -> int:
        committed = worker.commits.committed
        task = await run_until(worker, lambda: committed.get(1) == 3 and committed.get(0) == 1)
        entries_then = client.xlen(stream)  # reads still answer while writes are held
        await stop(worker, task)
        return entries_then

    client.execute_command("CLIENT", "PAUSE", 20_000, "WRITE")  # Redis holds every write, as it does in an outage
    try:
        entries_while_paused = asyncio.run(scenario())
    finally:
        client.execute_command("CLIENT", "UNPAUSE")
    assert entries_while_paused == 0  # both partitions were read and committed while the audit entry waited
    wait_until(lambda: client.xlen(stream) == 1, 10, "the audit entry after Redis came back")
    (entry,) = client.xrange(stream)
    assert entry[1][b"action"] == b"offset_out_of_range" and entry[1][b"partition"] == b"0"


def test_a_frame_the_model_cannot_score_is_dead_lettered_and_the_replica_stays_healthy(
    config: ZsadConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config.model_copy(update={"ingest": config.ingest.model_copy(update={"max_retries": 3})})
    camera = next(iter(config.cameras))
    replica = InspectorCore(config, ResultStore.from_config(config))  # the replica's work, without Serve around it
    method = replica.methods[replica.camera_keys[camera]].module
    scores = method.predict

    def predict(images: list[np.ndarray]) -> Any:  # a kernel that faults on one input, as real ones can
        if any(not image.any() for image in images):
            raise RuntimeError("kernel fault on an all-black input")
        return scores(images)

    pixels = method.pixels

    def stage_input(images: list[np.ndarray]) -> Any:  # the shared image stage meets the same input first
        if any(not image.any() for image in images):
            raise RuntimeError("kernel fault on an all-black input")
        return pixels(images)

    monkeypatch.setattr(method, "pixels", stage_input)
    monkeypatch.setattr(method, "predict", predict)
    health_failures: list[str] = []

    async def submit(request: FrameRequest) -> FrameAck:  # one frame per call: ingest retries a failed one alone
        try:
            (ack,) = await asyncio.to_thread(replica.process, [request])
            return ack
        finally:
            try:  # what Serve's health check would see now
                replica.check_health(config.serving.unhealthy_after_model_failures)
            except ReplicaUnhealthyError as exc:
                health_failures.append(str(exc))

    for index in range(2):
        send(config, 0, frame_bytes(index), f"good-{index}")
    send(config, 0, encode_jpeg(np.zeros((96, 96, 3), dtype=np.uint8)), "black")  # offset 2
    send(config, 0, frame_bytes(3), "good-3")
    worker = IngestWorker(config, [0], submit, name="t")

    async def scenario() -> None:
        task = await run_until(worker, lambda: worker.commits.committed.get(0) == 4, timeout_s=30)
        await stop(worker, task)

    asyncio.run(scenario())
    assert letters(config) == [("inference_failed", f"{config.kafka.frames_topic}:0:2")]
    assert health_failures == []
    assert worker.stats()["counts"]["stored"] == 3 and worker.stats()["counts"]["frame_retries"] == 4
