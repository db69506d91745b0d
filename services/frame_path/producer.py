"""Putting frames on Kafka: a producer for the frame contract, a camera simulator, and topic creation.

Why here and not only in tests: ``zsad produce`` drives the local demo and load tests with the same code
path a camera gateway would use, so the contract of :mod:`services.records` is exercised end to end.
Delivery settings favour not losing frames over latency: ``acks="all"``, a short linger so frames that
arrive together share a request, and no compression (JPEG/PNG are already compressed).

Size: industrial cameras send PNGs of 5-30 MB, while Kafka's defaults stop at about 1 MiB. Every hop is sized
from ``limits.max_bytes`` (:func:`record_limit`): the topics' ``max.message.bytes`` (:func:`ensure_topics`), the
producer's ``max_request_size``, and the consumers' fetch sizes. A frame above ``limits.max_bytes`` is refused
here with :class:`FrameTooLargeError` before it is sent, since ingest would only dead-letter it.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaError, MessageSizeTooLargeError, TopicAlreadyExistsError, for_code
from kafka.producer.future import FutureRecordMetadata

from services.config import KafkaConfig, LimitsConfig, ZsadConfig
from services.records import ContentType, DeadLetter, FrameHeaders, new_frame_id, sniff_content_type
from zsad_core.errors import ZsadError

if TYPE_CHECKING:
    from zsad_core.data import SyntheticDataset

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Futures kept before the oldest must have completed: bounds memory of an endless stream and surfaces a
# broken broker within a second or so instead of at the end.
_MAX_PENDING = 256
Source = Literal["synthetic"] | str | Path
# Room above the largest frame for the key, the headers and the record batch's own fields.
RECORD_OVERHEAD_BYTES = MiB
TOPIC_MAX_MESSAGE_BYTES = "max.message.bytes"


class FrameTooLargeError(ZsadError, ValueError):
    """A frame is larger than the configured maximum, or than what the broker's topic accepts."""

    reason = "too_large"


def record_limit(limits: LimitsConfig) -> int:
    """The largest Kafka record a frame of at most ``limits.max_bytes`` becomes: the size every hop must accept."""
    return limits.max_bytes + RECORD_OVERHEAD_BYTES


class FrameProducer:
    """Sends frames (key = camera, value = image bytes, contract headers) to the frames topic.

    Args:
        kafka: connection settings and topic names.
        linger_ms: how long the client waits to fill a request.
        max_frame_bytes: largest image accepted by :meth:`send_frame` (``limits.max_bytes``).
        max_request_size: largest request sent; default room for one frame of ``max_frame_bytes`` with its
            headers. The topic's ``max.message.bytes`` applies too.
        **producer_kwargs: further kafka-python ``KafkaProducer`` settings (they win over the above).
    """

    def __init__(
        self,
        kafka: KafkaConfig | None = None,
        *,
        linger_ms: int = 5,
        max_frame_bytes: int = LimitsConfig().max_bytes,
        max_request_size: int | None = None,
        **producer_kwargs: Any,
    ):
        self.kafka = kafka or KafkaConfig()
        self.max_frame_bytes = max_frame_bytes
        if max_request_size is None:
            max_request_size = max_frame_bytes + RECORD_OVERHEAD_BYTES
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
        return cls(config.kafka, max_frame_bytes=config.limits.max_bytes, **producer_kwargs)

    def send_frame(
        self,
        camera: str,
        image_bytes: bytes,
        frame_id: str | None = None,
        capture_ts: float | None = None,
        content_type: ContentType | None = None,
        *,
        topic: str | None = None,
        extra_headers: Sequence[tuple[str, bytes]] = (),
    ) -> FutureRecordMetadata:
        """Send one frame; the returned future resolves to its partition and offset.

        Args:
            camera: camera id (the record key).
            image_bytes: the encoded JPEG or PNG.
            frame_id: unique per camera; default a fresh random id.
            capture_ts: seconds since the epoch; default now.
            content_type: default sniffed from the bytes.
            topic: default the configured frames topic.
            extra_headers: headers sent after the contract's (a gateway's part identity, for example).

        Raises:
            BadHeadersError: an id or the timestamp breaks the contract (checked here, before sending).
            FrameTooLargeError: the image is larger than ``max_frame_bytes``.
            ValueError: no content type was given and the bytes are neither JPEG nor PNG.
        """
        if len(image_bytes) > self.max_frame_bytes:
            raise FrameTooLargeError(
                f"frame of {camera} has {len(image_bytes):,} bytes, above the limit of {self.max_frame_bytes:,} "
                "(limits.max_bytes)"
            )
        meta = FrameHeaders.create(
            camera,
            frame_id or new_frame_id(),
            time.time() if capture_ts is None else capture_ts,
            content_type or sniff_content_type(image_bytes),
        )
        return self._producer.send(
            topic or self.kafka.frames_topic,
            key=meta.kafka_key(),
            value=image_bytes,
            headers=meta.kafka_headers() + list(extra_headers),
        )

    def send_original(
        self, key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> FutureRecordMetadata:
        """Send a record to the frames topic exactly as it was first produced (a dead letter's original, re-sent by
        ``zsad dlq resend``): its headers are not rebuilt, so its frame id, capture time and part identity stay."""
        return self._producer.send(self.kafka.frames_topic, key=key, value=value, headers=list(headers))

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

    Raises:
        FrameTooLargeError: a frame is above ``limits.max_bytes``, or the broker refused its size (a topic
            created with a smaller ``max.message.bytes``); the frames before it were sent. After a refusal by
            the broker the producer cannot send again (kafka-python's idempotent producer treats it as fatal).
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
            partitions.add(_acknowledged(pending.popleft(), producer.kafka.frames_topic))
    producer.flush()
    while pending:
        partitions.add(_acknowledged(pending.popleft(), producer.kafka.frames_topic))
    return ProduceStats(sent, sent_bytes, time.monotonic() - start, frozenset(partitions))



def stream_synthetic(config: ZsadConfig, cameras: Sequence[str], count: int, fps: float) -> list[threading.Thread]:
    """Start one thread per camera sending ``count`` synthetic frames at ``fps`` (0: as fast as possible).

    Why a thread per camera and a seed from the camera id: a demo shows the cameras side by side, each with its
    own product and the same frames on every run. Join the threads to wait for the last acknowledgement.
    """

    def send(camera: str) -> None:
        with FrameProducer.from_config(config) as producer:
            produce(producer, camera, "synthetic", fps=fps, count=count, seed=camera_seed(camera))

    senders = [threading.Thread(target=send, args=(camera,), daemon=True) for camera in cameras]
    for sender in senders:
        sender.start()
    return senders


def _camera_hash(camera: str) -> int:
    """A well-mixed 64-bit number from a camera id.

    Not crc32: it is affine, so ids that differ in one character (``cam1-x``, ``cam2-x``) differ by a constant
    there, and such pairs fell on the same seed (modulo 1000) and product about once in 60, sending the same frames.
    """
    return int.from_bytes(hashlib.blake2b(camera.encode(), digest_size=8).digest(), "big")


def camera_seed(camera: str) -> int:
    """The seed of a simulated camera's synthetic frames: the same frames on every run, another set per camera."""
    return _camera_hash(camera) % 2**32


def camera_product(
    camera: str,
    count: int,
    *,
    seed: int,
    size: int = 256,
    anomaly_ratio: float = 0.2,
    family: str | None = None,
    split: str = "test",
) -> SyntheticDataset:
    """``count`` synthetic frames of the product a simulated camera shows: ``family``, by default one picked from
    the camera id, so that two simulated cameras show different products. ``split="train"`` gives good frames of
    the same product that the stream never sends (:class:`~zsad_core.data.SyntheticDataset`)."""
    from zsad_core.data import FAMILIES, SyntheticDataset

    chosen = family or FAMILIES[(_camera_hash(camera) >> 32) % len(FAMILIES)]
    return SyntheticDataset(seed=seed, classes=[chosen], per_class=count, size=size, anomaly_ratio=anomaly_ratio,
                            split=split)  # fmt: skip


def _acknowledged(future: FutureRecordMetadata, topic: str) -> int:
    """The partition a sent frame landed on; a size refusal by the broker becomes a :class:`FrameTooLargeError`."""
    try:
        return future.get(timeout=30).partition
    except MessageSizeTooLargeError as exc:
        raise FrameTooLargeError(
            f"the broker refused a frame as too large for topic {topic}: the topic's max.message.bytes is below "
            f"limits.max_bytes (topics created by `zsad up` are sized for it; raise it on a topic made elsewhere)"
        ) from exc


def _synthetic_frames(
    camera: str,
    count: int | None,
    content_type: ContentType,
    seed: int,
    size: int,
    anomaly_ratio: float,
    family: str | None,
) -> Iterator[tuple[bytes, ContentType]]:
    from zsad_core.imageio import encode_jpeg, encode_png

    # A finite dataset cycled for endless streams: samples are generated on access, so its size costs nothing.
    dataset = camera_product(camera, count or 1000, seed=seed, size=size, anomaly_ratio=anomaly_ratio, family=family)
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


def ensure_topics(
    kafka: KafkaConfig,
    *,
    dlq_partitions: int = 1,
    max_message_bytes: int | None = None,
    timeout_ms: int = 10_000,
) -> dict[str, int]:
    """Create the frames and dead-letter topics if they do not exist; safe to call any number of times.

    Args:
        kafka: bootstrap servers, security, topic names, partitions and replication factor of the frames topic.
        dlq_partitions: partitions of the dead-letter topic (its traffic is small).
        max_message_bytes: the topics' ``max.message.bytes`` (:func:`record_limit`; a dead letter carries the
            whole frame, so both topics get it). Existing topics reporting a smaller value are raised to it where
            the broker allows (a refusal is logged). ``None`` leaves the broker's default (about 1 MiB on Apache
            Kafka and noida-db).
        timeout_ms: how long the broker may take.

    Returns:
        ``{topic: partition count}`` as the broker reports it afterwards. An existing frames topic keeps its
        partitions; a count different from the configured one is logged, as it bounds ingest parallelism.

    Raises:
        kafka.errors.KafkaError: creation failed for another reason than "already exists".
    """
    topic_configs = {} if max_message_bytes is None else {TOPIC_MAX_MESSAGE_BYTES: str(max_message_bytes)}
    wanted = {
        kafka.frames_topic: {"num_partitions": kafka.partitions, "replication_factor": kafka.replication_factor,
                             "topic_configs": topic_configs},
        kafka.dlq_topic: {"num_partitions": dlq_partitions, "replication_factor": kafka.replication_factor,
                          "topic_configs": topic_configs},
    }  # fmt: skip
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
        if max_message_bytes is not None:
            try:
                _raise_message_limit(admin, list(wanted), max_message_bytes)
            except KafkaError as exc:  # e.g. no AlterConfigs permission: large frames then fail with a clear error
                log.warning("could not raise %s of %s: %s", TOPIC_MAX_MESSAGE_BYTES, list(wanted), exc)
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


def _raise_message_limit(admin: KafkaAdminClient, topics: list[str], max_message_bytes: int) -> None:
    """Raise ``max.message.bytes`` of topics that report a smaller one (made before, or by another tool).

    A topic whose broker reports no such setting (Tansu has no limit) is left alone.
    """
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics], config_filter="all"
    )
    too_small = []
    for topic, entries in described.get("topic", {}).items():
        current = entries.get(TOPIC_MAX_MESSAGE_BYTES, {}).get("value")
        if current is not None and int(current) < max_message_bytes:
            too_small.append(topic)
    if not too_small:
        return
    log.info("raising %s of %s to %d", TOPIC_MAX_MESSAGE_BYTES, too_small, max_message_bytes)
    outcome = admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, topic, {TOPIC_MAX_MESSAGE_BYTES: str(max_message_bytes)})
         for topic in too_small]
    )  # fmt: skip
    failed = {topic: result for topic, result in outcome.get("topic", {}).items() if result != "OK"}
    if failed:
        raise KafkaError(f"cannot raise {TOPIC_MAX_MESSAGE_BYTES} to {max_message_bytes}: {failed}")
