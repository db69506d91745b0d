"""Building blocks of the streaming tests: configs on the test services, frames, offsets, waiting."""

from __future__ import annotations

import struct
import time
import uuid
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition
from ray import serve
from ray.serve import Application

from services.config import KafkaConfig, ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.serve_app import app_from_config, frame_path_app
from services.stores.result_store import ResultStore
from zsad_core.imageio import encode_jpeg

FRAME_SIDE = 96
MODEL_SIDE = 64


def stream_config(
    broker: KafkaBroker,
    redis_server: RedisServer,
    unique: str,
    cameras: dict[str, dict[str, Any]],
    *,
    partitions: int = 4,
    num_actors: int = 2,
    max_in_flight: int = 16,
    max_batch_size: int = 8,
    registry: dict[str, str] | None = None,
) -> ZsadConfig:
    """A config on the test broker and Redis with its own topics and group, tiny CLIP at 64 px."""
    config = ZsadConfig(
        registry=registry or {},
        kafka={
            "bootstrap_servers": [broker.bootstrap_servers],
            "frames_topic": f"frames-{unique}",
            "dlq_topic": f"dlq-{unique}",
            "group_id": f"group-{unique}",
            "partitions": partitions,
        },
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={
            camera: {"class_name": "object", "threshold": 0.5, "image_size": MODEL_SIDE, **settings}
            for camera, settings in cameras.items()
        },
        serving={"backbone": "zsad-tiny-vit", "max_batch_size": max_batch_size, "torch_threads": 1},
        ingest={"num_actors": num_actors, "max_in_flight": max_in_flight, "max_retries": 1},
    )
    ensure_topics(config.kafka)
    return config


def camera_of(config: ZsadConfig, role: str) -> tuple[str, ZsadConfig]:
    """The camera whose id starts with ``<role>-`` in a deployment shared by several checks, and the config with
    that camera alone (for sending frames to it only)."""
    camera = next(camera for camera in config.cameras if camera.startswith(f"{role}-"))
    return camera, config.model_copy(update={"cameras": {camera: config.cameras[camera]}})


def frame_bytes(seed: int, side: int = FRAME_SIDE) -> bytes:
    """A small random JPEG."""
    rng = np.random.default_rng(seed)
    return encode_jpeg(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), quality=80)


def png_claiming(width: int, height: int) -> bytes:
    """A valid little PNG whose header claims ``width`` x ``height`` (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def produce_frames(config: ZsadConfig, per_camera: int, *, start: int = 0) -> dict[str, list[str]]:
    """Send ``per_camera`` frames for every configured camera; frame ids are ``<camera>-<n>``."""
    ids: dict[str, list[str]] = {camera: [] for camera in config.cameras}
    with FrameProducer.from_config(config) as producer:
        futures = []
        for index in range(start, start + per_camera):
            for number, camera in enumerate(config.cameras):
                frame_id = f"{camera}-{index}"
                futures.append(producer.send_frame(camera, frame_bytes(index * 31 + number), frame_id=frame_id))
                ids[camera].append(frame_id)
        producer.flush()
        for future in futures:
            future.get(timeout=30)
    return ids


def committed_offsets(config: ZsadConfig) -> dict[int, int]:
    """Offsets committed under the config's group, per partition of the frames topic (-1: none)."""
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.kafka.group_id,
                             enable_auto_commit=False)  # fmt: skip
    try:
        topic = config.kafka.frames_topic
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        offsets = {}
        for partition in partitions:
            committed = consumer.committed(TopicPartition(topic, partition))
            offsets[partition] = -1 if committed is None else int(committed)
        return offsets
    finally:
        consumer.close()


def committed_total(config: ZsadConfig) -> int:
    """How many records of the frames topic are committed under the config's group, all partitions together."""
    return sum(max(offset, 0) for offset in committed_offsets(config).values())


def end_offsets(config: ZsadConfig, topic: str | None = None) -> dict[int, int]:
    """The end offset of each partition of ``topic`` (the frames topic by default), as the broker reports it."""
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        topic = topic or config.kafka.frames_topic
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: int(end) for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def read_topic(kafka: KafkaConfig, topic: str, expected: int, timeout_s: float = 15.0) -> list[ConsumerRecord]:
    """Every record of ``topic`` from the beginning (assign mode, as the ingest actors read), waiting until at
    least ``expected`` arrived or ``timeout_s`` passed."""
    consumer = KafkaConsumer(
        **kafka.client_kwargs(),
        enable_auto_commit=False,
        receive_message_max_bytes=kafka.receive_message_max_bytes,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[ConsumerRecord] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll ``predicate`` until true; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


# How often a stopping replica counts its unfinished requests. Serve's default (2 s) sleeps before the first count,
# so every deletion waited 2 s even with nothing in flight; the tests check the drain, not Serve's period.
SHUTDOWN_WAIT_LOOP_S = 0.1
# How often Serve checks a replica's health in the tests that kill replicas: Serve notices a dead replica only at
# its next check (10 s by default), and those tests are about what is lost or duplicated, not about Serve's period.
QUICK_HEALTH_CHECK_S = 1.0


def with_serve_options(app: Application, **options: Any) -> Application:
    """``app`` (as :func:`app_from_config` binds it) with Serve ``options`` set on every deployment, and every
    deployment checking for unfinished requests every :data:`SHUTDOWN_WAIT_LOOP_S` while it stops; all other
    options and the bindings stay as they are."""
    options = {"graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S, **options}
    bound = app._bound_deployment

    def rebound(value: Any) -> Any:
        return with_serve_options(value, **options) if isinstance(value, Application) else value

    args = [rebound(value) for value in bound.init_args]
    kwargs = {key: rebound(value) for key, value in bound.init_kwargs.items()}
    return bound.options(**options).bind(*args, **kwargs)


def deploy_app(config: ZsadConfig, name: str, *, view: bool = False, **serve_options: Any) -> None:
    """Run the frame path of ``config`` as ``name`` (route ``/name``), with ``serve_options`` on every deployment
    (see :func:`with_serve_options`); returns once it is running.

    The operator's view in front of it only with ``view``: the tests of the frame path never open a page, and the
    view's replica would cost each of them about 2 s of CPU.
    """
    app = with_serve_options(app_from_config(config) if view else frame_path_app(config), **serve_options)
    serve.run(app, name=name, route_prefix=f"/{name}", blocking=False)


def delete_app(name: str, timeout_s: float = 60.0) -> None:
    """Delete the application ``name`` and wait until it is gone (the ingest drained and committed).

    Polled every 0.1 s: ``serve.delete`` itself polls once a second.
    """
    serve.delete(name, _blocking=False)
    wait_until(lambda: name not in serve.status().applications, timeout_s, f"application {name} deleted", 0.1)


class Deployment:
    """One deployed application and its Redis view; deleted (ingest drained) by :meth:`delete`.

    ``serve_options`` go to every deployment of the application (see :func:`with_serve_options`).
    """

    def __init__(self, config: ZsadConfig, **serve_options: Any) -> None:
        self.config = config
        self.serve_options = serve_options  # set on every deployment (see with_serve_options)
        self.name = f"zsad-{uuid.uuid4().hex[:8]}"
        self.store = ResultStore.from_config(config)
        self.deployed = False

    def deploy(self) -> None:
        deploy_app(self.config, self.name, **self.serve_options)
        self.deployed = True

    def controller(self) -> Any:
        return serve.get_deployment_handle("IngestController", app_name=self.name)

    def inspector(self) -> Any:
        return serve.get_deployment_handle("Inspector", app_name=self.name)

    def status(self) -> dict[str, Any]:
        return self.controller().status.remote().result(timeout_s=30)

    def results(self, camera: str) -> int:
        return self.store.count_results(camera)

    def total_results(self) -> int:
        return sum(self.results(camera) for camera in self.config.cameras)

    def delete(self) -> None:
        if self.deployed:
            delete_app(self.name)
            self.deployed = False
