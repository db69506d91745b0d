"""Serving follows the registry: alias moves swap prompts between batches; bad versions never serve."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from services.config import ZsadConfig
from services.frame_path.decoding import FrameRequest
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.prompt_lifecycle.hot_swap import RegistryPrompts, prompt_follower, report_refusals
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettings
from services.stores.result_store import ResultStore
from zsad_core.artifacts import WEIGHTS_FILE, save_prompts
from zsad_core.methods import load_method

pytestmark = pytest.mark.integration
METHOD = "clip-ad+"


def make_versions(registry: ArtifactRegistry, tmp_path: Path, count: int) -> list[str]:
    """Register ``count`` artifacts of the tiny clip-ad+ with different prompt weights; their versions."""
    method = load_method(METHOD, backbone="zsad-tiny-vit", pretrained=False, image_size=64)
    versions = []
    for index in range(count):
        with torch.no_grad():
            for parameter in method.trainable_parameters():
                parameter.add_(0.5 * torch.randn_like(parameter))
        path = save_prompts(method, tmp_path / f"artifact{index}", {"training_data": "synthetic"})
        versions.append(registry.register(path, created_by="test").version)
    return versions


@pytest.fixture
def registry(tmp_path: Path, redis_server: RedisServer, unique: str) -> ArtifactRegistry:
    return ArtifactRegistry(tmp_path / "registry", redis_server.client(), namespace=f"test:{unique}:registry")


def core_following(
    redis_server: RedisServer, registry: ArtifactRegistry, camera: str, alias: str | None
) -> InspectorCore:
    config = ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={camera: {"method": METHOD, "class_name": "object", "threshold": 0.5, "image_size": 64,
                          "prompt_version": alias}},
        serving={"backbone": "zsad-tiny-vit"},
    )  # fmt: skip
    return InspectorCore(config, ResultStore(redis_server.client()), prompts=RegistryPrompts(registry))


def frame(camera: str, frame_id: str) -> FrameRequest:
    image = np.random.default_rng(7).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    return FrameRequest(camera, frame_id, capture_ts=1.0e9, partition=0, offset=0, image=image)


def test_promotion_swaps_rollback_restores_and_each_result_names_its_version(
    redis_server: RedisServer, registry: ArtifactRegistry, tmp_path: Path, unique: str
) -> None:
    v1, v2 = make_versions(registry, tmp_path, 2)
    registry.promote(METHOD, v1, actor="test", reason="first")
    camera = f"cam{unique}"
    core = core_following(redis_server, registry, camera, "champion")
    (before,) = core.process([frame(camera, "a")])
    assert before.prompt_version == v1

    registry.promote(METHOD, v2, actor="test", reason="better")
    (swap,) = core.refresh_prompts()
    assert swap.swapped and (swap.old_version, swap.new_version) == (v1, v2)
    (after,) = core.process([frame(camera, "b")])  # the same pixels as frame "a"
    assert after.prompt_version == v2 and after.score != pytest.approx(before.score)
    assert core.store.get_result(camera, "a").prompt_version == v1
    assert core.store.get_result(camera, "b").prompt_version == v2
    assert core.refresh_prompts() == []  # nothing moved: nothing reloaded

    registry.rollback(METHOD, actor="test", reason="regression")
    (swap,) = core.refresh_prompts()
    assert swap.swapped and swap.new_version == v1
    (again,) = core.process([frame(camera, "c")])
    assert again.prompt_version == v1 and again.score == pytest.approx(before.score, abs=1e-6)


def test_a_version_corrupted_after_promotion_is_refused_and_audited(
    redis_server: RedisServer, registry: ArtifactRegistry, tmp_path: Path, unique: str
) -> None:
    v1, v2 = make_versions(registry, tmp_path, 2)
    registry.promote(METHOD, v1, actor="test", reason="first")
    camera = f"cam{unique}"
    core = core_following(redis_server, registry, camera, "champion")
    registry.promote(METHOD, v2, actor="test", reason="next")  # intact when promoted ...
    weights = Path(registry.resolve(METHOD, v2).location) / WEIGHTS_FILE
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))  # ... then damaged on disk before the replica loads it

    swaps = core.refresh_prompts()
    report_refusals(registry, swaps, replica="replica-under-test")
    (swap,) = swaps
    assert not swap.swapped and swap.error_reason == "hash_mismatch"
    (ack,) = core.process([frame(camera, "x")])
    assert ack.status == "stored" and ack.prompt_version == v1  # the old version keeps serving
    entry = registry.audit(1)[0]
    assert (entry["action"], entry["outcome"], entry["cause"]) == ("serve_load", "refused", "hash_mismatch")
    assert entry["actor"] == "replica-under-test" and entry["from_version"] == v1


def test_the_watcher_swaps_on_the_promotion_message(
    redis_server: RedisServer, registry: ArtifactRegistry, tmp_path: Path, unique: str
) -> None:
    v1, v2 = make_versions(registry, tmp_path, 2)
    registry.promote(METHOD, v1, actor="test", reason="first")
    camera = f"cam{unique}"
    core = core_following(redis_server, registry, camera, "champion")
    watcher = prompt_follower(core, registry, replica="r", check_every_s=3600).start()  # no periodic re-check
    try:
        time.sleep(0.5)  # subscribed
        registry.promote(METHOD, v2, actor="test", reason="better")
        deadline = time.monotonic() + 10
        while core.describe()["cameras"][camera]["prompt_version"] != v2:
            assert time.monotonic() < deadline, "the watcher did not swap within 10 s"
            time.sleep(0.1)
    finally:
        watcher.stop()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {timeout_s:.0f} s"
        time.sleep(0.05)


def test_a_camera_that_starts_following_an_alias_live_follows_its_next_promotion(
    redis_server: RedisServer, registry: ArtifactRegistry, tmp_path: Path, unique: str
) -> None:
    v1, v2 = make_versions(registry, tmp_path, 2)
    registry.promote(METHOD, v1, actor="test", reason="first")
    camera = f"cam{unique}"
    core = core_following(redis_server, registry, camera, None)  # zero-shot: follows nothing at start
    follower = prompt_follower(core, registry, replica="r", check_every_s=3600).start()  # no periodic re-check
    try:
        channel = registry.events_channel
        wait_until(lambda: dict(registry.client.pubsub_numsub(channel)).get(channel.encode(), 0) > 0, "subscribed")
        core.apply_settings(CameraSettings(camera, "s1", 0.5, prompt_version="champion"))  # `zsad camera set`
        assert core.describe()["cameras"][camera]["prompt_version"] == v1
        registry.promote(METHOD, v2, actor="test", reason="better")
        wait_until(lambda: core.describe()["cameras"][camera]["prompt_version"] == v2, "the follower swapped to v2")
    finally:
        follower.stop()


def test_only_methods_some_camera_uses_stay_loaded(
    redis_server: RedisServer, registry: ArtifactRegistry, tmp_path: Path, unique: str
) -> None:
    v1, v2 = make_versions(registry, tmp_path, 2)
    registry.promote(METHOD, v2, actor="test", reason="first")
    camera = f"cam{unique}"
    core = core_following(redis_server, registry, camera, v1)
    for version, follows in ((2, v2), (3, "champion"), (4, None)):
        core.apply_settings(CameraSettings(camera, f"s{version}", 0.5, prompt_version=follows))
        assert list(core.methods) == [core.camera_keys[camera]]
        assert core.methods[core.camera_keys[camera]].prompt_version == (v2 if follows else None)
    (swap_free,) = core.process([frame(camera, "a")])
    assert swap_free.status == "stored" and swap_free.prompt_version is None
    registry.promote(METHOD, v1, actor="test", reason="back")
    assert core.refresh_prompts() == []  # no camera follows an alias: nothing is reloaded
