"""The replica's work without Ray: scoring, storing, duplicates, failure isolation, shared models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.config import ConfigError, ZsadConfig
from services.frame_path.decoding import FrameRequest, ModelUnavailableError
from services.frame_path.inspector import InspectorCore
from services.frame_path.result_store import ResultStore
from services.local_stack.service_processes import RedisServer

pytestmark = pytest.mark.integration


def _config(redis_server: RedisServer, cameras: dict[str, dict]) -> ZsadConfig:
    return ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={
            name: {"class_name": "object", "threshold": 0.5, "image_size": 64, **settings}
            for name, settings in cameras.items()
        },
        serving={"backbone": "zsad-tiny-vit"},
    )


def _request(camera: str, frame_id: str, seed: int, offset: int = 0) -> FrameRequest:
    image = np.random.default_rng(seed).integers(0, 256, (80, 72, 3), dtype=np.uint8)
    return FrameRequest(camera, frame_id, capture_ts=1.0e9, partition=0, offset=offset, image=image)


@pytest.fixture
def store(redis_server: RedisServer) -> ResultStore:
    return ResultStore(redis_server.client())


def test_batch_is_scored_stored_and_acknowledged(redis_server: RedisServer, store: ResultStore, unique: str) -> None:
    cams = {
        f"a{unique}": {"method": "clip-ad"},
        f"b{unique}": {"method": "anoclip", "options": {"image_views": "none"}},
    }
    core = InspectorCore(_config(redis_server, cams), store)
    a, b = cams
    requests = [_request(a, "f1", 1, 10), _request(b, "f1", 2, 11), _request(a, "f2", 3, 12)]
    acks = core.process(requests)

    assert [ack.status for ack in acks] == ["stored"] * 3
    assert [(ack.camera, ack.frame_id, ack.offset) for ack in acks] == [
        (r.camera, r.frame_id, r.offset) for r in requests
    ]
    assert {ack.batch_size for ack in acks[::2]} == {2}  # camera a's two frames went through the model together
    for ack, request in zip(acks, requests, strict=True):
        stored = store.get_result(request.camera, request.frame_id)
        assert stored is not None and stored.score == pytest.approx(ack.score) and stored.label == ack.label
        assert stored.offset == request.offset and stored.method == cams[request.camera]["method"]
        assert store.get_map(request.camera, request.frame_id).shape == (64, 64)
    # The stored score is the method's own score for that frame.
    method = core.methods[core.camera_keys[a]].module
    expected = method.predict([requests[2].image]).scores[0].item()
    assert store.get_result(a, "f2").score == pytest.approx(expected, abs=1e-5)
    assert core.backbone_count == 1  # two methods, one CLIP


def test_duplicates_skip_the_model(
    redis_server: RedisServer, store: ResultStore, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = f"c{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    core.process([_request(camera, "x", 1)])
    method = core.methods[core.camera_keys[camera]].module
    calls = []
    monkeypatch.setattr(
        method, "predict", lambda images: calls.append(len(images)) or (_ for _ in ()).throw(AssertionError)
    )
    acks = core.process([_request(camera, "x", 99)])
    assert acks[0].status == "duplicate" and calls == []
    assert store.count_events(camera) == 1


def test_a_frame_that_breaks_the_model_fails_alone(
    redis_server: RedisServer, store: ResultStore, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = f"d{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    method = core.methods[core.camera_keys[camera]].module
    original = method.predict
    poisoned = _request(camera, "poison", 5)

    def predict(images):
        if any(image is poisoned.image for image in images):
            raise RuntimeError("kernel fault")
        return original(images)

    monkeypatch.setattr(method, "predict", predict)
    acks = core.process([_request(camera, "ok1", 1), poisoned, _request(camera, "ok2", 2)])
    assert [ack.status for ack in acks] == ["stored", "failed", "stored"]
    assert acks[1].error_reason == "inference_error" and "kernel fault" in acks[1].error_detail
    assert store.get_result(camera, "poison") is None and store.get_result(camera, "ok2") is not None


def test_non_finite_output_is_a_failure_not_a_stored_nan(
    redis_server: RedisServer, store: ResultStore, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = f"e{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    method = core.methods[core.camera_keys[camera]].module
    original = method.predict

    def predict(images):
        result = original(images)
        return type(result)(result.maps, torch.full_like(result.scores, float("nan")))

    monkeypatch.setattr(method, "predict", predict)
    (ack,) = core.process([_request(camera, "n", 1)])
    assert ack.status == "failed" and "non-finite" in ack.error_detail
    assert store.get_result(camera, "n") is None


def test_bad_method_options_and_unresolvable_prompts_fail_at_start(
    redis_server: RedisServer, store: ResultStore, unique: str
) -> None:
    with pytest.raises(TypeError, match="no option"):
        InspectorCore(_config(redis_server, {f"f{unique}": {"method": "clip-ad", "options": {"temprature": 2}}}), store)
    with pytest.raises(ConfigError, match="prompt registry"):
        InspectorCore(
            _config(redis_server, {f"g{unique}": {"method": "vcp-clip", "prompt_version": "champion"}}), store
        )


def test_serving_precision_reaches_the_backbone(redis_server: RedisServer, store: ResultStore, unique: str) -> None:
    camera = f"h{unique}"
    config = _config(redis_server, {camera: {"method": "clip-ad"}}).model_copy(deep=True)
    config.serving.precision = "bf16"
    core = InspectorCore(config, store)
    backbone = core.methods[core.camera_keys[camera]].module.backbone
    assert next(backbone.parameters()).dtype == torch.bfloat16
    (ack,) = core.process([_request(camera, "p", 1)])
    assert ack.status == "stored" and np.isfinite(ack.score)


def test_a_model_failing_on_every_frame_is_the_replicas_fault(
    redis_server: RedisServer, store: ResultStore, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = f"i{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    method = core.methods[core.camera_keys[camera]].module

    def broken(images):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(method, "predict", broken)
    with pytest.raises(ModelUnavailableError, match="every frame"):  # ingest retries it as a system failure
        core.process([_request(camera, "u", 1), _request(camera, "v", 2)])
    assert store.get_result(camera, "u") is None
