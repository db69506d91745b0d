"""Cameras' reference sets in serving: built from good frames, applied on promotion, refused when they cannot
serve. A set promoted while frames stream is tested with a prompt promotion on one deployment in
test_stream_pipeline.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from stream_helpers import (
    FRAME_SIDE,
    MODEL_SIDE,
    frame_bytes,
)

from services.config import ZsadConfig
from services.frame_path.decoding import FrameRequest
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.prompt_lifecycle.hot_swap import RegistryReferences, report_refusals
from services.prompt_lifecycle.reference_sets import (
    ReferenceInputError,
    build_reference_set,
    check_fits_camera,
    images_from_folder,
)
from services.stores.artifact_registry import ArtifactRegistry, PromotionRefusedError, reference_registry
from services.stores.camera_settings import CameraSettingsStore
from services.stores.result_store import ResultStore
from zsad_core.errors import ImageTooLargeError
from zsad_core.few_shot import fuse_scores
from zsad_core.imageio import encode_png
from zsad_core.preprocess import preprocess

pytestmark = pytest.mark.integration
METHOD = "clip-ad"


def core_config(
    redis_server: RedisServer, tmp_path: Path, unique: str, camera: str, **camera_fields: object
) -> ZsadConfig:
    return ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={camera: {"method": METHOD, "class_name": "object", "threshold": 0.5, "image_size": MODEL_SIDE,
                          "roi": [8, 8, 80, 80], "references": "champion", **camera_fields}},
        serving={"backbone": "zsad-tiny-vit"},
        registry={"root": str(tmp_path / "registry"), "namespace": f"test:{unique}:registry"},
    )  # fmt: skip


def good_folder(path: Path, count: int = 4) -> Path:
    path.mkdir()
    for index in range(count):
        (path / f"good{index}.jpg").write_bytes(frame_bytes(1000 + index))
    return path


def frame(camera: str, frame_id: str) -> FrameRequest:
    image = np.random.default_rng(7).integers(0, 256, (MODEL_SIDE, MODEL_SIDE, 3), dtype=np.uint8)
    return FrameRequest(camera, frame_id, capture_ts=1.0e9, partition=0, offset=0, image=image)


def test_a_promoted_set_fuses_into_the_scores_and_rollback_restores_zero_shot_scores(
    redis_server: RedisServer, tmp_path: Path, unique: str
) -> None:
    camera = f"cam{unique}"
    config = core_config(redis_server, tmp_path, unique, camera)
    registry = reference_registry(config, redis_server.client())
    core = InspectorCore(config, ResultStore(redis_server.client()), references=RegistryReferences(registry))
    (zero_shot,) = core.process([frame(camera, "a")])  # the alias is unset: zero-shot
    r1 = build_reference_set(config, camera, images_from_folder(good_folder(tmp_path / "goods")), registry, actor="t")
    assert r1.version == "r1" and r1.image_size == MODEL_SIDE and r1.backbone == f"zsad-tiny-vit@{MODEL_SIDE}"
    assert core.refresh_references() == []  # registered, not promoted: nothing changes
    registry.promote(camera, "r1", actor="test", reason="first", fits=lambda e: check_fits_camera(e, config, camera))
    (swap,) = core.refresh_references()
    assert swap.swapped and (swap.old_version, swap.new_version) == (None, "r1")
    (fused,) = core.process([frame(camera, "b")])  # the same pixels as frame "a"
    # Independent of the serving path: the mean score fusion of the zero-shot score and the few-shot map's peak.
    module = core.methods[core.camera_keys[camera]].module
    pixels, _ = preprocess([frame(camera, "c").image], module.backbone.preprocess_config())
    with torch.inference_mode():
        few_shot_map = module.few_shot_map(pixels)
    expected = fuse_scores(torch.tensor([zero_shot.score]), few_shot_map, "mean", 0.5).item()
    assert fused.score == pytest.approx(expected, rel=1e-4)
    stored = core.store.get_result(camera, "b")
    assert stored.reference_version == "r1" and core.store.get_result(camera, "a").reference_version is None

    r2 = build_reference_set(config, camera, images_from_folder(good_folder(tmp_path / "more", 2)), registry, actor="t")
    registry.promote(camera, r2.version, actor="test", reason="more goods")
    assert [s.new_version for s in core.refresh_references()] == ["r2"]
    registry.rollback(camera, actor="test", reason="r2 was worse")
    assert [s.new_version for s in core.refresh_references()] == ["r1"]
    (again,) = core.process([frame(camera, "d")])
    assert again.score == pytest.approx(fused.score, abs=1e-6)
    assert core.store.get_result(camera, "d").reference_version == "r1"


def test_bad_input_is_refused_and_the_serving_version_stays(
    redis_server: RedisServer, tmp_path: Path, unique: str
) -> None:
    camera = f"cam{unique}"
    config = core_config(redis_server, tmp_path, unique, camera)
    registry = reference_registry(config, redis_server.client())
    r1 = build_reference_set(config, camera, images_from_folder(good_folder(tmp_path / "goods")), registry, actor="t")
    registry.promote(camera, r1.version, actor="test", reason="first")
    core = InspectorCore(config, ResultStore(redis_server.client()), references=RegistryReferences(registry))
    assert core.describe()["cameras"][camera]["reference_version"] == "r1"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ReferenceInputError):
        build_reference_set(config, camera, images_from_folder(empty), registry, actor="t")
    oversized = good_folder(tmp_path / "oversized", 1)
    (oversized / "wide.png").write_bytes(encode_png(np.zeros((FRAME_SIDE, 20_000, 3), np.uint8)))
    with pytest.raises(ImageTooLargeError, match=r"wide\.png"):
        build_reference_set(config, camera, images_from_folder(oversized), registry, actor="t")
    small = tmp_path / "small"
    small.mkdir()
    (small / "tiny.png").write_bytes(encode_png(np.zeros((40, 40, 3), np.uint8)))  # the 80 px ROI does not fit
    with pytest.raises(ReferenceInputError, match=r"tiny\.png"):
        build_reference_set(config, camera, images_from_folder(small), registry, actor="t")
    assert [entry.version for entry in registry.list(camera)] == ["r1"]  # nothing was registered

    # A set built for another input size: refused at promotion, and by the replica if promoted anyway.
    other = core_config(redis_server, tmp_path, unique, camera, image_size=48)
    r2 = build_reference_set(other, camera, images_from_folder(good_folder(tmp_path / "at48")), registry, actor="t")
    with pytest.raises(PromotionRefusedError, match="at 48 px") as refused:
        registry.promote(camera, r2.version, actor="test", reason="x",
                         fits=lambda entry: check_fits_camera(entry, config, camera))  # fmt: skip
    assert refused.value.reason == "incompatible_references" and registry.aliases(camera)["champion"] == "r1"
    registry.promote(camera, r2.version, actor="test", reason="without the check")
    swaps = core.refresh_references()
    report_refusals(registry, swaps, replica="replica-under-test")
    (swap,) = swaps
    assert not swap.swapped and swap.error_reason == "incompatible_references" and swap.old_version == "r1"
    (ack,) = core.process([frame(camera, "x")])
    assert ack.status == "stored" and core.store.get_result(camera, "x").reference_version == "r1"
    entry = registry.audit(1)[0]
    assert (entry["action"], entry["outcome"], entry["cause"]) == ("serve_load", "refused", "incompatible_references")
    assert core.refresh_references() == []  # the same refusal is reported once


def test_a_reference_set_is_cut_with_the_live_roi_not_the_configured_one(
    redis_server: RedisServer, tmp_path: Path, unique: str
) -> None:
    camera = f"cam{unique}"
    config = core_config(redis_server, tmp_path, unique, camera)  # configured roi [8, 8, 80, 80]
    client = redis_server.client()
    settings = CameraSettingsStore(ArtifactRegistry.from_config(config.registry, client), config)
    settings.update(camera, {"roi": [0, 0, 64, 64]}, actor="test", reason="the part moved")  # what ingest cuts now
    registry = reference_registry(config, client)
    entry = build_reference_set(config, camera, images_from_folder(good_folder(tmp_path / "goods", 1)), registry,
                                actor="test")  # fmt: skip
    manifest = json.loads((registry.materialise(entry) / "manifest.json").read_text())
    assert manifest["extra"]["roi"] == [0, 0, 64, 64]
