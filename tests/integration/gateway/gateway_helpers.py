"""Building blocks of the gateway tests: a topic on the test broker, images, a gateway in a thread, waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from services.config import KafkaConfig, LimitsConfig
from services.frame_path.producer import ensure_topics
from services.gateway.encoding import FrameEncoding
from services.gateway.folder_source import FolderSettings, FolderSource
from services.gateway.metrics import GatewayMetrics
from services.gateway.runner import Source, run_gateway
from services.gateway.sender import FrameSender
from services.gateway.spool import DiskSpool
from zsad_core.imageio import encode_jpeg, encode_png


def gateway_kafka(bootstrap: str, unique: str, *, create: bool = True) -> KafkaConfig:
    """A one-partition frames topic of its own, so the records' order is the send order."""
    kafka = KafkaConfig(bootstrap_servers=[bootstrap], frames_topic=f"gw-{unique}", dlq_topic=f"gw-dlq-{unique}",
                        partitions=1)  # fmt: skip
    if create:
        ensure_topics(kafka)
    return kafka


def image_bytes(seed: int, side: int = 32, png: bool = False) -> bytes:
    """A small random image, different for every seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return encode_png(pixels) if png else encode_jpeg(pixels, quality=80)


def read_frames(kafka: KafkaConfig, expected: int, timeout_s: float = 20.0) -> list[ConsumerRecord]:
    """Every record of the frames topic from the beginning, waiting until at least ``expected`` arrived."""
    consumer = KafkaConsumer(**kafka.reader_options("gateway-test"))
    try:
        partitions = [TopicPartition(kafka.frames_topic, p)
                      for p in sorted(consumer.partitions_for_topic(kafka.frames_topic) or ())]  # fmt: skip
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(records) < expected:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        # A little longer, so that duplicates beyond ``expected`` show up too.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
        return records
    finally:
        consumer.close()


def header(record: ConsumerRecord, name: str) -> str | None:
    """The text of a record's header."""
    values = [value for key, value in record.headers if key == name]
    return values[-1].decode() if values else None


def wait_for(condition: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll ``condition`` until it holds; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)


def folder_source(camera: str, folder: Path, metrics: GatewayMetrics, *, settle_s: float = 0.3,
                  encoding: FrameEncoding | None = None, limits: LimitsConfig | None = None,
                  **settings: object) -> FolderSource:  # fmt: skip
    """A folder source with done/ and failed/ inside the folder and a fast rescan."""
    return FolderSource(
        camera,
        FolderSettings(path=folder, done=folder / "done", failed=folder / "failed", settle_s=settle_s,
                       rescan_s=0.05, **settings),  # type: ignore[arg-type]
        encoding=encoding or FrameEncoding(),
        limits=limits or LimitsConfig(),
        metrics=metrics,
    )


@contextmanager
def running_gateway(source: Source, kafka: KafkaConfig, spool: Path, metrics: GatewayMetrics,
                    **sender_options: object) -> Iterator[FrameSender]:  # fmt: skip
    """A gateway in a thread for the body's duration; stopped (flushed) afterwards."""
    sender = FrameSender(kafka, DiskSpool(spool, 64 * 1024 * 1024), metrics, max_frame_bytes=LimitsConfig().max_bytes,
                         **sender_options)  # type: ignore[arg-type]  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=run_gateway, args=(source, sender, stop), daemon=True)
    thread.start()
    try:
        yield sender
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the gateway did not stop"


def names(folder: Path) -> set[str]:
    """Names of the files directly in ``folder``."""
    return {path.name for path in folder.iterdir() if path.is_file()} if folder.is_dir() else set()
