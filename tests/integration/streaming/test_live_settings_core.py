"""Live camera settings in one replica without Ray: versions per batch, pause, regions, drift episodes."""

from __future__ import annotations

import numpy as np
import pytest

from services.config import ZsadConfig
from services.frame_path.decoding import FrameRequest
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettingsStore
from services.stores.result_store import ResultStore
from zsad_core.decisions import DriftReference, MapPlacement, decode_regions, encode_regions, extract_regions
from zsad_core.imageio import FrameGeometry

pytestmark = pytest.mark.integration


def _setup(redis_server: RedisServer, unique: str, tmp_path: object) -> tuple[InspectorCore, CameraSettingsStore, str]:
    camera = f"live{unique}"
    config = ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        registry={"root": str(tmp_path), "namespace": f"zsad:registry:{unique}"},
        cameras={camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": 64}},
        serving={"backbone": "zsad-tiny-vit"},
    )
    store = ResultStore(redis_server.client())
    registry = ArtifactRegistry(config.registry.root, store.client, namespace=config.registry.namespace)
    return InspectorCore(config, store), CameraSettingsStore(registry, config), camera


def _request(camera: str, n: int, geometry: FrameGeometry | None = None) -> FrameRequest:
    image = np.random.default_rng(n).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return FrameRequest(camera, f"f{n}", capture_ts=1.0e9, partition=0, offset=n, image=image, geometry=geometry)


def test_a_settings_change_decides_from_the_next_batch(redis_server: RedisServer, unique: str, tmp_path) -> None:
    core, settings, camera = _setup(redis_server, unique, tmp_path)
    first = core.process([_request(camera, n) for n in range(4)])
    # Between the score distribution's extremes, so the labels of both batches can be told apart.
    new_threshold = float(np.median([ack.score for ack in first]))
    changed = settings.update(camera, {"threshold": new_threshold}, actor="test", reason="tighter")
    core.apply_settings(changed)
    second = core.process([_request(camera, n) for n in range(4, 8)])

    for acks, version, threshold in ((first, None, 0.5), (second, "s1", new_threshold)):
        for ack in acks:
            stored = core.store.get_result(camera, ack.frame_id)
            assert stored.settings_version == version and stored.calibration_version is None
            assert stored.threshold == threshold and stored.label == int(stored.score >= threshold)
            assert stored.decision == ("reject" if stored.label else "pass")


def test_a_paused_camera_is_skipped_then_scored_after_resume(
    redis_server: RedisServer, unique: str, tmp_path
) -> None:
    core, settings, camera = _setup(redis_server, unique, tmp_path)
    core.apply_settings(settings.update(camera, {"paused": True}, actor="test", reason="line stop"))
    acks = core.process([_request(camera, n) for n in range(3)])
    assert [ack.status for ack in acks] == ["skipped"] * 3
    assert core.store.count_events(camera) == 0 and core.store.get_result(camera, "f0") is None
    core.apply_settings(settings.update(camera, {"paused": False}, actor="test", reason="line runs"))
    acks = core.process([_request(camera, n) for n in range(3)])
    assert [ack.status for ack in acks] == ["stored"] * 3
    assert core.store.count_events(camera) == 3
    assert core.store.get_result(camera, "f0").settings_version == "s2"


def test_stored_regions_are_the_regions_of_the_stored_map(redis_server: RedisServer, unique: str, tmp_path) -> None:
    core, settings, camera = _setup(redis_server, unique, tmp_path)
    geometry = FrameGeometry(frame_width=640, frame_height=480, region=(100, 40, 320, 400), size=64)
    probe = core.process([_request(camera, 0, geometry)])[0]
    stored_map = core.store.get_map(camera, probe.frame_id)
    pixel_threshold = float(np.median(stored_map))  # half of a map: regions on maps like it
    changed = settings.update(camera, {"pixel_threshold": pixel_threshold, "min_area": 50}, actor="t", reason="r")
    core.apply_settings(changed)
    requests = [_request(camera, n, geometry) for n in range(1, 5)]
    core.process(requests)

    placement = MapPlacement.for_frame(640, 480, (100, 40, 320, 400))
    for request in requests:
        stored = core.store.get_result(camera, request.frame_id)
        expected = extract_regions(core.store.get_map(camera, request.frame_id), pixel_threshold, placement,
                                   min_area=50)  # fmt: skip
        assert expected, "the median of one map leaves regions on the others"
        assert list(stored.regions) == decode_regions(encode_regions(expected))
        assert stored.roi == (100, 40, 320, 400)  # the crop the map covers, for readers after a live ROI change
        event = core.store.recent(camera, 5)
        assert any(entry.frame_id == request.frame_id and entry.regions == stored.regions for entry in event)
        for region in stored.regions:  # every box lies inside the ROI, in frame pixels
            assert region.x >= 100 and region.x + region.width <= 420 and 40 <= region.y <= 440 - region.height
    assert core.store.get_result(camera, probe.frame_id).regions is None  # before a pixel threshold: none computed


def test_drift_is_audited_once_per_episode(redis_server: RedisServer, unique: str, tmp_path) -> None:
    core, settings, camera = _setup(redis_server, unique, tmp_path)
    # Calibration goods scoring near the top of CLIP-AD's range, far above what the random model gives: every
    # window lands in the lowest bin.
    reference = DriftReference.from_scores(np.linspace(4.0, 4.9, 200))
    _, calibrated = settings.record_calibration(camera, image_threshold=4.5, pixel_threshold=None,
                                                evidence={"drift_reference": reference.to_dict()},
                                                actor="test", reason="drifted scene")  # fmt: skip
    core.apply_settings(calibrated, settings.drift_reference(calibrated))
    for start in range(0, 120, 12):
        core.process([_request(camera, n) for n in range(start, start + 12)])

    audit = settings.registry.client.xrange(settings.registry.audit_key)
    drifts = [fields for _, fields in audit if fields[b"action"] == b"drift"]
    assert len(drifts) == 1  # windows of 108 and 120 scores both drifted: one episode
    assert drifts[0][b"from_version"] == calibrated.calibration.encode() == b"c1"
    assert core.drift[camera].drifted
    assert core.store.get_result(camera, "f0").calibration_version == "c1"
