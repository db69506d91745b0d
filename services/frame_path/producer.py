"""Putting frames on Kafka: a producer for the frame contract, a camera simulator, and topic creation.

Why here and not only in tests: ``zsad produce`` drives the local demo and load tests with the same code
path a camera gateway would use, so the contract of :mod:`services.frame_path.records` is exercised end to end.
Delivery settings favour not losing frames over latency: ``acks="all"``, a short linger so frames that
arrive together share a request, and no compression (JPEG/PNG are already compressed).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import TopicAlreadyExistsError, for_code
from kafka.producer.future import FutureRecordMetadata

from services.config import KafkaConfig, ZsadConfig
from services.frame_path.records import ContentType, DeadLetter, FrameHeaders, new_frame_id, sniff_content_type

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Futures kept before the oldest must have completed: bounds memory of an endless stream and surfaces a
# broken broker within a second or so instead of at the end.
_MAX_PENDING = 256
Source = Literal["synthetic"] | str | Path


class FrameProducer:
    """Sends frames (key = camera, value = image bytes, contract headers) to the frames topic.

    Args:
        kafka: connection settings and topic names.
        linger_ms: how long the client waits to fill a request.
        max_request_size: largest record accepted locally; the broker's own limit applies too.
        **producer_kwargs: further kafka-python ``KafkaProducer`` settings (they win over the above).
    """

    def __init__(
        self,
        kafka: KafkaConfig | None = None,
        *,
        linger_ms: int = 5,
        max_request_size: int = 33 * MiB,
        **producer_kwargs: Any,
    ):
        self.kafka = kafka or KafkaConfig()
        settings: dict[str, Any] = {
            **self.kafka.client_kwargs(),
            "client_id": f"{self.kafka.client_id}-producer",
            "acks": "all",
            "linger_ms": linger_ms,
            "compression_type": None,
            "max_request_size": max_request_size,
        }
        settings.update(producer_kwargs)
        self._producer = KafkaProducer(**settings)

    @classmethod
    def from_config(cls, config: ZsadConfig, **producer_kwargs: Any) -> FrameProducer:
        """A producer whose size limit follows ``config.limits.max_bytes`` (plus room for headers)."""
        return cls(config.kafka, max_request_size=config.limits.max_bytes + MiB, **producer_kwargs)

    def send_frame(
        self,
        camera: str,
        image_bytes: bytes,
        frame_id: str | None = None,
        capture_ts: float | None = None,
        content_type: ContentType | None = None,
        *,
        topic: str | None = None,
    ) -> FutureRecordMetadata:
        """Send one frame; the returned future resolves to its partition and offset.

        Args:
            camera: camera id (the record key).
            image_bytes: the encoded JPEG or PNG.
            frame_id: unique per camera; default a fresh random id.
            capture_ts: seconds since the epoch; default now.
            content_type: default sniffed from the bytes.
            topic: default the configured frames topic.

        Raises:
            BadHeadersError: an id or the timestamp breaks the contract (checked here, before sending).
            ValueError: no content type was given and the bytes are neither JPEG nor PNG.
        """
        meta = FrameHeaders.create(
            camera,
            frame_id or new_frame_id(),
            time.time() if capture_ts is None else capture_ts,
            content_type or sniff_content_type(image_bytes),
        )
        return self._producer.send(
            topic or self.kafka.frames_topic, key=meta.kafka_key(), value=image_bytes, headers=meta.kafka_headers()
        )

    def send_dead_letter(self, letter: DeadLetter) -> FutureRecordMetadata:
        """Send a dead-letter record as built by :meth:`DeadLetter.build`."""
        return self._producer.send(letter.topic, key=letter.key, value=letter.value, headers=letter.headers)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record sent so far is acknowledged (or failed)."""
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float | None = 10.0) -> None:
        """Flush and close the connection."""
        self._producer.close(timeout=timeout)

    def __enter__(self) -> Self:
        """The producer itself."""
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Close (flushing what was sent)."""
        self.close()


@dataclass(frozen=True)
class ProduceStats:
    """What :func:`produce` sent.

    Attributes:
        frames: records acknowledged by the broker.
        bytes: image bytes sent.
        seconds: wall time from the first send to the last acknowledgement.
        partitions: partitions the camera's frames landed on (one, since the key is the camera).
    """

    frames: int
    bytes: int
    seconds: float
    partitions: frozenset[int]


def produce(
    producer: FrameProducer,
    camera: str,
    source: Source = "synthetic",
    *,
    fps: float = 0.0,
    count: int | None = None,
    content_type: ContentType = "image/jpeg",
    seed: int = 0,
    size: int = 256,
    anomaly_ratio: float = 0.2,
    family: str | None = None,
) -> ProduceStats:
    """Stream frames of one camera, as ``zsad produce`` does.

    Args:
        producer: where to send.
        camera: camera id.
        source: ``"synthetic"`` for procedural products with synthetic defects
            (:class:`zsad_core.data.SyntheticDataset`), or a folder of JPEG/PNG files sent as they are.
        fps: frames per second; 0 sends as fast as the broker takes them.
        count: frames to send; ``None`` sends a folder once, or synthetic frames until interrupted.
        content_type: encoding of synthetic frames.
        seed: seed of the synthetic frames.
        size: side of synthetic frames.
        anomaly_ratio: fraction of synthetic frames with a defect.
        family: texture family of synthetic frames; default one picked from the camera id, so that two
            simulated cameras show different products.

    Returns:
        The :class:`ProduceStats` once every frame is acknowledged.
    """
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if str(source) == "synthetic":
        frames = _synthetic_frames(camera, count, content_type, seed, size, anomaly_ratio, family)
    else:
        frames = _folder_frames(Path(source), count)
    pending: deque[FutureRecordMetadata] = deque()
    partitions: set[int] = set()
    sent = sent_bytes = 0
    start = time.monotonic()
    for index, (data, kind) in enumerate(frames):
        if fps > 0:
            delay = start + index / fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pending.append(producer.send_frame(camera, data, content_type=kind))
        sent, sent_bytes = sent + 1, sent_bytes + len(data)
        while pending and (len(pending) > _MAX_PENDING or pending[0].is_done):
            partitions.add(pending.popleft().get(timeout=30).partition)
    producer.flush()
    while pending:
        partitions.add(pending.popleft().get(timeout=30).partition)
    return ProduceStats(sent, sent_bytes, time.monotonic() - start, frozenset(partitions))


def _synthetic_frames(
    camera: str,
    count: int | None,
    content_type: ContentType,
    seed: int,
    size: int,
    anomaly_ratio: float,
    family: str | None,
) -> Iterator[tuple[bytes, ContentType]]:
    from zsad_core.data import FAMILIES, SyntheticDataset
    from zsad_core.imageio import encode_jpeg, encode_png

    chosen = family or FAMILIES[zlib.crc32(camera.encode()) % len(FAMILIES)]
    # A finite dataset cycled for endless streams: samples are generated on access, so its size costs nothing.
    per_class = count if count else 1000
    dataset = SyntheticDataset(seed=seed, classes=[chosen], per_class=per_class, size=size, anomaly_ratio=anomaly_ratio)
    encode = encode_jpeg if content_type == "image/jpeg" else encode_png
    index = 0
    while count is None or index < count:
        yield encode(dataset[index % len(dataset)].image), content_type
        index += 1


def _folder_frames(folder: Path, count: int | None) -> Iterator[tuple[bytes, ContentType]]:
    from zsad_core.data.base import list_images

    if not folder.is_dir():
        raise ValueError(f"frame source {folder} is neither 'synthetic' nor a folder")
    files = list_images(str(folder))
    if not files:
        raise ValueError(f"folder {folder} holds no JPEG/PNG files")
    total = len(files) if count is None else count
    for index in range(total):
        data = Path(files[index % len(files)]).read_bytes()
        yield data, sniff_content_type(data)


def ensure_topics(kafka: KafkaConfig, *, dlq_partitions: int = 1, timeout_ms: int = 10_000) -> dict[str, int]:
    """Create the frames and dead-letter topics if they do not exist; safe to call any number of times.

    Args:
        kafka: bootstrap servers, security, topic names, partitions and replication factor of the frames topic.
        dlq_partitions: partitions of the dead-letter topic (its traffic is small).
        timeout_ms: how long the broker may take.

    Returns:
        ``{topic: partition count}`` as the broker reports it afterwards. An existing frames topic keeps its
        partitions; a count different from the configured one is logged, as it bounds ingest parallelism.

    Raises:
        kafka.errors.KafkaError: creation failed for another reason than "already exists".
    """
    wanted = {
        kafka.frames_topic: {"num_partitions": kafka.partitions, "replication_factor": kafka.replication_factor},
        kafka.dlq_topic: {"num_partitions": dlq_partitions, "replication_factor": kafka.replication_factor},
    }
    admin = KafkaAdminClient(
        **kafka.client_kwargs(), client_id=f"{kafka.client_id}-admin", request_timeout_ms=timeout_ms
    )
    try:
        response = admin.create_topics(wanted, timeout_ms=timeout_ms, raise_errors=False)
        for topic in response["topics"]:
            error = for_code(topic["error_code"])
            if topic["error_code"] and error is not TopicAlreadyExistsError:
                raise error(f"cannot create topic {topic['name']!r}: {topic.get('error_message')}")
        admin.wait_for_topics(list(wanted))
        counts = {entry["name"]: len(entry["partitions"]) for entry in admin.describe_topics(list(wanted))}
    finally:
        admin.close()
    if counts.get(kafka.frames_topic) != kafka.partitions:
        log.warning(
            "topic %s has %s partitions, the config asks for %d; existing topics are not resized",
            kafka.frames_topic,
            counts.get(kafka.frames_topic),
            kafka.partitions,
        )
    return counts
