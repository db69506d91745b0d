"""Live camera settings on the real pipeline: the noida broker, a local Ray with Serve, redis-server.

A settings change is stored with the store's typed function (what ``zsad camera set`` calls) while frames
stream; the replicas and the ingest actors pick it up from the registry's channel, without a restart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from ray import serve
from stream_helpers import (
    camera_of,
    committed_total,
    delete_app,
    deploy_app,
    produce_frames,
    stream_config,
    wait_until,
)

from services.config import ZsadConfig
from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettingsStore
from services.stores.result_store import ResultStore
from zsad_core.decisions import MapPlacement, decode_regions, encode_regions, extract_regions

pytestmark = pytest.mark.integration

ROI = (16, 8, 64, 80)  # inside the helpers' 96 x 96 frames
IN_FLIGHT = 16  # frames each of the two ingest actors may have sent and not yet seen acknowledged


class _App:
    """One deployed application, its result store and its camera settings store."""

    def __init__(self, config: ZsadConfig) -> None:
        self.config = config
        self.name = f"zsad-{uuid.uuid4().hex[:8]}"
        self.store = ResultStore.from_config(config)
        registry = ArtifactRegistry(config.registry.root, self.store.client, namespace=config.registry.namespace)
        self.settings = CameraSettingsStore(registry, config)
        deploy_app(config, self.name)

    def call(self, deployment: str, method: str) -> Any:
        handle = serve.get_deployment_handle(deployment, app_name=self.name)
        return getattr(handle, method).remote().result(timeout_s=30)

    def counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for actor in self.call("IngestController", "status")["actors"]:
            for status, n in actor["counts"].items():
                totals[status] = totals.get(status, 0) + n
        return totals


@pytest.fixture
def app(
    ray_serve: None, noida_broker: KafkaBroker, redis_server: RedisServer, unique: str, tmp_path: Any
) -> Iterator[_App]:
    """One application with two cameras, one per scenario; the scenarios run in turn on it, each counting from
    where the previous one left the shared counters and offsets."""
    registry = {"root": str(tmp_path), "namespace": f"test:{unique}:registry"}
    cameras = {f"{role}-{unique}": {"method": "clip-ad"} for role in ("changed", "paused")}
    config = stream_config(noida_broker, redis_server, unique, cameras, partitions=2, num_actors=2,
                           max_in_flight=IN_FLIGHT, registry=registry)  # fmt: skip
    app = _App(config)
    try:
        yield app
    finally:
        delete_app(app.name)


def test_a_settings_change_applies_between_batches_and_a_paused_camera_is_committed_and_skipped(app: _App) -> None:
    """Both without a restart: first a camera's settings change mid-stream, then another camera is paused and
    resumed (one deployment for the two: each start of one costs about 12 s of CPU)."""
    _settings_change_mid_stream(app)
    _pause_and_resume(app)


def _settings_change_mid_stream(app: _App) -> None:
    camera, alone = camera_of(app.config, "changed")
    ids = produce_frames(alone, per_camera=300)[camera]
    wait_until(lambda: app.store.count_results(camera) >= 40, 120, "the first results")
    replica = app.call("Inspector", "replica_actor_name")
    first = app.store.recent(camera, 1)[0]
    pixel_threshold = float(np.median(app.store.get_map(camera, first.frame_id)))
    new = {"threshold": first.score, "pixel_threshold": pixel_threshold, "min_area": 20, "roi": list(ROI)}
    changed = app.settings.update(camera, new, actor="test", reason="tighter, with regions, cropped")
    wait_until(lambda: app.store.count_results(camera) >= 300, 240, "every frame")

    results = [app.store.get_result(camera, frame_id) for frame_id in ids]
    assert all(result is not None for result in results) and app.store.count_events(camera) == 300
    ordered = sorted(results, key=lambda r: (r.infer_ts, r.offset))
    versions = [result.settings_version for result in ordered]
    switch = versions.index(changed.version)
    assert 40 <= switch < 300 and set(versions[:switch]) == {None} and set(versions[switch:]) == {"s1"}
    for result in ordered[:switch]:
        assert result.threshold == 0.5 and result.regions is None and result.calibration_version is None
    for result in ordered[switch:]:
        assert result.threshold == first.score and result.label == int(result.score >= first.score)
        assert result.regions is not None
    # Frames ingest had decoded before it saw the new ROI (at most the in-flight windows of both actors) keep
    # their whole-frame crop, and their boxes are placed by that geometry; every later frame is cropped.
    cropped = ordered[switch + 2 * IN_FLIGHT :]
    placement = MapPlacement(*ROI)
    assert len(cropped) >= 50 and sum(len(result.regions) for result in cropped) > 0
    for result in cropped:
        for region in result.regions:
            assert ROI[0] <= region.x <= ROI[0] + ROI[2] - region.width
            assert ROI[1] <= region.y <= ROI[1] + ROI[3] - region.height
    for result in cropped[::10]:
        expected = extract_regions(app.store.get_map(camera, result.frame_id), pixel_threshold, placement,
                                   min_area=20)  # fmt: skip
        assert list(result.regions) == decode_regions(encode_regions(expected))
    assert app.call("Inspector", "replica_actor_name") == replica  # same replica, no restart
    assert app.counts().get("stored") == 300
    wait_until(lambda: committed_total(app.config) == 300, 30, "the first scenario's offsets committed")


def _pause_and_resume(app: _App) -> None:
    camera, alone = camera_of(app.config, "paused")
    stored, committed = app.counts().get("stored", 0), committed_total(app.config)  # the first scenario's

    def serving(paused: bool) -> bool:
        return app.call("Inspector", "describe")["cameras"][camera]["paused"] is paused

    before = produce_frames(alone, per_camera=100)[camera]
    wait_until(lambda: app.store.count_results(camera) >= 100, 120, "the frames before the pause")
    app.settings.update(camera, {"paused": True}, actor="test", reason="line stop")
    wait_until(lambda: serving(paused=True), 30, "the replica to pause the camera")
    paused = produce_frames(alone, per_camera=100, start=100)[camera]
    wait_until(lambda: app.counts().get("skipped", 0) >= 100 and committed_total(app.config) >= committed + 200, 120,
               "the paused frames")  # fmt: skip
    app.settings.update(camera, {"paused": False}, actor="test", reason="line runs")
    wait_until(lambda: serving(paused=False), 30, "the replica to resume the camera")
    after = produce_frames(alone, per_camera=100, start=200)[camera]
    wait_until(lambda: app.store.count_results(camera) >= 200 and committed_total(app.config) >= committed + 300, 120,
               "the frames after it")  # fmt: skip

    assert all(app.store.get_result(camera, frame_id) is not None for frame_id in before + after)
    assert all(app.store.get_result(camera, frame_id) is None for frame_id in paused)
    assert app.store.count_events(camera) == 200 and committed_total(app.config) == committed + 300
    counts = app.counts()
    assert counts.get("stored") == stored + 200 and counts.get("skipped") == 100 and "dead_lettered" not in counts
    assert {app.store.get_result(camera, frame_id).settings_version for frame_id in after} == {"s2"}
