"""The standing fault suite on the whole pipeline: faults while frames stream, counted exactly afterwards.

One stream takes several faults in turn (sharing a deployment keeps the suite inside CI's time): an ingest actor
killed (Ray restarts it), the ingest controller killed, the model replica frozen then killed, Redis frozen for
3 s longer than the store's socket timeout, plus a record the Kafka client cannot parse and a frame id reused for
other bytes. Afterwards every frame has exactly one result and one event, the two bad records one dead letter
each, and every offset is committed. A second test breaks the model itself (a promoted prompt version whose
weights are NaN) and checks that the replica's health check gets it replaced and that no frame is dead-lettered
for the model's fault.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer
from process_tree import ray_actor_pids
from stream_helpers import (
    QUICK_HEALTH_CHECK_S,
    Deployment,
    committed_offsets,
    end_offsets,
    frame_bytes,
    read_topic,
    stream_config,
    wait_until,
)
from test_ingest_worker_kafka import RawHeaderName

from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.records import H_DLQ_REASON, encode_headers

pytestmark = pytest.mark.integration


def replica_pid(app: str, deployment: str) -> int:
    """The process id of the one live replica of ``deployment`` in ``app``."""
    pids = ray_actor_pids(f"ServeReplica:{app}:{deployment}")
    assert len(pids) == 1, pids
    return pids[0]


class SteadyProducer(threading.Thread):
    """Sends ``per_camera`` frames per camera over ``seconds``, so the faults happen while frames arrive; after
    :meth:`rush`, the rest at once."""

    def __init__(self, config: ZsadConfig, per_camera: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.config, self.per_camera, self.seconds = config, per_camera, seconds
        self.sent: dict[str, list[str]] = {camera: [] for camera in config.cameras}
        self.error: BaseException | None = None
        self._rushed = threading.Event()

    def rush(self) -> None:
        """Send the frames left without pausing between them."""
        self._rushed.set()

    def run(self) -> None:
        try:
            with FrameProducer.from_config(self.config) as producer:
                for index in range(self.per_camera):
                    for number, camera in enumerate(self.config.cameras):
                        frame_id = f"{camera}-{index}"
                        producer.send_frame(camera, frame_bytes(index * 31 + number), frame_id=frame_id).get(60)
                        self.sent[camera].append(frame_id)
                    self._rushed.wait(self.seconds / self.per_camera)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def send_bad_records(config: ZsadConfig, camera: str) -> None:
    """A record whose header name is not UTF-8, and an id already used by a frame, with other bytes."""
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        topic = config.kafka.frames_topic
        producer.send(topic, key=camera.encode(), value=frame_bytes(7),
                      headers=[(RawHeaderName(b"zsad-\xff\xfe"), b"x")]).get(30)  # fmt: skip
        producer.send(topic, key=camera.encode(), value=frame_bytes(99_999),
                      headers=encode_headers(f"{camera}-0", 1.0e9, "image/jpeg")).get(30)  # fmt: skip
    finally:
        producer.close()


@pytest.mark.takes_long(
    reason="six faults in sequence on one stream, Redis frozen for 13 s (longer than the"
    " store's socket timeout)"
)
def test_actor_kill_controller_kill_replica_freeze_and_kill_redis_freeze_and_bad_records_lose_and_duplicate_nothing(
    noida_broker: KafkaBroker, redis_server: RedisServer, deployments: list[Deployment], unique: str
) -> None:
    cameras = {f"a-{unique}": {"method": "clip-ad"}, f"b-{unique}": {"method": "clip-ad"}}
    config = stream_config(noida_broker, redis_server, unique, cameras, max_in_flight=8)
    deployment = Deployment(config, health_check_period_s=QUICK_HEALTH_CHECK_S)  # killed replicas noticed in 1 s
    deployments.append(deployment)
    deployment.deploy()
    producer = SteadyProducer(config, per_camera=120, seconds=60.0)
    producer.start()
    wait_until(lambda: deployment.total_results() >= 20, 120, "the stream to get going")
    first = next(iter(cameras))
    send_bad_records(config, first)

    def progress(frames: int, what: str) -> None:
        target = deployment.total_results() + frames
        wait_until(lambda: deployment.total_results() >= target, 180, what)

    # A crashed ingest actor, not a polite stop: Ray restarts it and it resumes from the committed offsets.
    actors = ray_actor_pids("IngestActor")
    assert len(actors) == config.ingest.num_actors, "ingest actors of another deployment are still alive"
    os.kill(actors[0], signal.SIGKILL)
    wait_until(lambda: deployment.status()["restarts_seen"] >= 1, 60, "the supervisor to see the actor restart")
    progress(10, "frames after an ingest actor was killed")
    os.kill(replica_pid(deployment.name, "IngestController"), signal.SIGKILL)  # Serve replaces it; new actors
    progress(10, "frames after the controller was killed")
    inspector = replica_pid(deployment.name, "Inspector")
    os.kill(inspector, signal.SIGSTOP)  # a hung replica: calls pile up, then it dies
    time.sleep(5)
    os.kill(inspector, signal.SIGKILL)
    progress(10, "frames after the replica was frozen and killed")
    assert replica_pid(deployment.name, "Inspector") != inspector  # Serve replaced it
    assert redis_server.pid is not None
    # Long enough for calls made at the start of the freeze to hit the store's socket timeout (10 s).
    freeze_s = deployment.store.client.connection_pool.connection_kwargs["socket_timeout"] + 3.0
    os.kill(redis_server.pid, signal.SIGSTOP)
    # The frames left go while Redis is frozen, so the last fault still finds frames to lose or duplicate; the
    # stream's nominal length only has to outlast the faults before it, on a slow day too.
    producer.rush()
    try:
        time.sleep(freeze_s)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    producer.join(timeout=120)
    assert producer.error is None and not producer.is_alive()
    assert deployment.total_results() < 240, "the stream finished before the faults: make it longer"

    wait_until(lambda: deployment.total_results() >= 240, 300, "every frame after the faults")
    for camera, frame_ids in producer.sent.items():
        assert deployment.results(camera) == len(frame_ids) == 120
        assert deployment.store.count_events(camera) == 120  # re-deliveries and the reused id wrote no event
        assert all(deployment.store.get_result(camera, frame_id) is not None for frame_id in frame_ids)
    def all_committed() -> bool:  # a partition no camera hashed to has nothing committed (-1) and ends at 0
        return {p: max(offset, 0) for p, offset in committed_offsets(config).items()} == end_offsets(config)

    wait_until(all_committed, 30, "every offset committed")
    assert sum(end_offsets(config).values()) == 242
    # Every record is committed, and a record is committed only once its dead letter is acknowledged: the
    # dead-letter topic is complete, and all of it is read (a second letter for a record would be in it).
    lettered = sum(end_offsets(config, config.kafka.dlq_topic).values())
    letters = read_topic(config.kafka, config.kafka.dlq_topic, expected=lettered, timeout_s=30.0)
    assert len(letters) == lettered
    assert sorted(dict(r.headers)[H_DLQ_REASON].decode() for r in letters) == [
        "conflicting_frame_id", "unparseable_record",
    ]  # fmt: skip


@pytest.mark.takes_long(
    reason="Serve must see the replica's health check fail in a row"
    " and start a replacement, which loads its model"
)
def test_a_model_that_fails_on_everything_gets_its_replica_replaced_and_dead_letters_nothing(
    noida_broker: KafkaBroker, redis_server: RedisServer, deployments: list[Deployment], unique: str, tmp_path: Path
) -> None:
    from test_prompt_hot_swap import METHOD, make_versions

    from services.stores.artifact_registry import ArtifactRegistry
    from zsad_core.artifacts import save_prompts
    from zsad_core.methods import load_method

    namespace = f"test:{unique}:registry"
    registry = ArtifactRegistry(tmp_path / "registry", redis_server.client(), namespace=namespace)
    (good,) = make_versions(registry, tmp_path, 1)
    broken_method = load_method(METHOD, backbone="zsad-tiny-vit", pretrained=False, image_size=64)
    with torch.no_grad():
        for parameter in broken_method.trainable_parameters():
            parameter.fill_(float("nan"))  # loads like any version, scores nothing
    broken = registry.register(save_prompts(broken_method, tmp_path / "broken", {}), created_by="test").version
    registry.promote(METHOD, good, actor="test", reason="serving")
    camera = f"cam-{unique}"
    cameras = {camera: {"method": METHOD, "prompt_version": "champion"}}
    config = stream_config(noida_broker, redis_server, unique, cameras, partitions=2, num_actors=1,
                           registry={"root": str(tmp_path / "registry"), "namespace": namespace})  # fmt: skip
    config = config.model_copy(update={"serving": config.serving.model_copy(
        update={"health_check_period_s": 1.0, "unhealthy_after_model_failures": 2})})  # fmt: skip
    deployment = Deployment(config)
    deployments.append(deployment)
    deployment.deploy()
    # Sent over 15 s: the broken version, its replica's replacement and the rollback come after the first 20
    # results, while frames still arrive or wait unscored in the topic.
    producer = SteadyProducer(config, per_camera=150, seconds=15.0)
    producer.start()
    wait_until(lambda: deployment.results(camera) >= 20, 120, "the first results")
    replica = replica_pid(deployment.name, "Inspector")

    registry.promote(METHOD, broken, actor="test", reason="a bad version")
    wait_until(lambda: _replaced(deployment, replica), 120, "Serve to replace the failing replica")
    stalled = deployment.results(camera)
    time.sleep(3)
    assert deployment.results(camera) == stalled  # the broken version stores nothing (non-finite output)
    registry.rollback(METHOD, actor="test", reason="the bad version fails")
    producer.join(timeout=120)
    assert producer.error is None

    wait_until(lambda: deployment.results(camera) >= 150, 240, "every frame after the rollback")
    assert deployment.store.count_events(camera) == 150
    stats = deployment.status()["actors"]
    assert sum(actor["counts"].get("dead_lettered", 0) for actor in stats) == 0
    assert sum(actor["counts"].get("system_retries", 0) for actor in stats) > 0
    assert {deployment.store.get_result(camera, f"{camera}-{i}").prompt_version for i in range(150)} == {good}


def _replaced(deployment: Deployment, old_pid: int) -> bool:
    try:
        return replica_pid(deployment.name, "Inspector") != old_pid
    except AssertionError:
        return False  # between the old replica's end and the new one's start
