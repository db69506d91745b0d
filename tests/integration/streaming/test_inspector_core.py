"""The replica's work without Ray: scoring, storing, duplicates, failure isolation, shared models."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from services.cli.main import main
from services.config import ConfigError, ZsadConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import FrameRequest, ModelUnavailableError, decode_record, model_input_sizes
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.records import H_PART_ID, H_PART_SERIAL, H_PART_STATION, encode_headers, sniff_content_type
from services.stores.result_store import ResultStore
from zsad_core.imageio import DEFAULT_LIMITS, decode_image, encode_jpeg, encode_png

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
    original = method.pixels
    poisoned = _request(camera, "poison", 5)

    def pixels(images):  # the frame breaks the vision forward of whatever batch it is in
        if any(image is poisoned.image for image in images):
            raise RuntimeError("kernel fault")
        return original(images)

    monkeypatch.setattr(method, "pixels", pixels)
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
    original = method.predict_head

    def predict_head(outputs):
        result = original(outputs)
        return type(result)(result.maps, torch.full_like(result.scores, float("nan")))

    monkeypatch.setattr(method, "predict_head", predict_head)
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

    def broken(images_or_outputs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(method, "predict_head", broken)  # the shared stages' heads
    monkeypatch.setattr(method, "predict", broken)  # then the retry frame by frame
    with pytest.raises(ModelUnavailableError, match="every frame"):  # ingest retries it as a system failure
        core.process([_request(camera, "u", 1), _request(camera, "v", 2)])
    assert store.get_result(camera, "u") is None


@dataclass
class _Record:
    """The fields of a Kafka record that ingest reads."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = "frames"
    partition: int = 0
    offset: int = 0


def _scene(height: int, width: int) -> np.ndarray:
    small = np.random.default_rng(7).integers(0, 256, (height // 24, width // 24, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


@pytest.mark.parametrize(
    ("frame", "max_score_diff", "max_map_diff"),
    [
        ("ordinary", 0.0, 0.0),  # 120x96 at 64 px: ingest makes the very pixels the replica used to make
        # 2048x1536, JPEG decoded at 1/8 scale, PNG box-averaged by 6: one resampling filter against another
        # (measured: scores 0.0006 and 0.002 apart, maps 2.4% and 2.9% of their range at most).
        ("large_jpeg", 0.01, 0.05),
        ("large_png", 0.01, 0.05),
    ],
)
def test_model_inputs_from_ingest_score_like_the_full_frames_did(
    redis_server: RedisServer, store: ResultStore, unique: str, frame: str, max_score_diff: float, max_map_diff: float
) -> None:
    camera = f"j{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    cameras = core.config.cameras
    data = {
        "ordinary": lambda: encode_png(_scene(96, 120)),
        "large_jpeg": lambda: encode_jpeg(_scene(1536, 2048), quality=90),
        "large_png": lambda: encode_png(_scene(1536, 2048)),
    }[frame]()
    record = _Record(camera.encode(), data, encode_headers("m1", 1.0e9, sniff_content_type(data)))
    request = decode_record(
        record, cameras, DEFAULT_LIMITS, input_sizes=model_input_sizes(cameras), budget=DecodeBudget(10**8)
    )
    assert request.image.shape == (64, 64, 3)

    method = core.methods[core.camera_keys[camera]].module
    before = method.predict([decode_image(data)])  # the replica's work when it was sent the whole frame
    (ack,) = core.process([request])
    assert ack.status == "stored"
    score_diff = abs(ack.score - before.scores[0].item())
    stored_map = store.get_map(camera, "m1")
    assert stored_map.shape == (64, 64)  # the configured size, the frame's region squashed as before
    reference_map = before.maps[0].numpy()
    map_range = float(reference_map.max() - reference_map.min())
    map_diff = float(np.abs(stored_map - reference_map).max()) / map_range
    quantisation = 1 / 65535  # the stored 16-bit PNG
    assert score_diff <= max_score_diff + 1e-6, score_diff
    assert map_diff <= max_map_diff + quantisation, map_diff


def test_cameras_on_different_products_share_one_vision_forward_per_vision_path(
    redis_server: RedisServer, store: ResultStore, unique: str
) -> None:
    """Three clip-ad cameras on three products and one anoclip camera: two vision paths, two forwards."""
    cams = {
        f"k{unique}": {"method": "clip-ad", "class_name": "bottle"},
        f"l{unique}": {"method": "clip-ad", "class_name": "cable"},
        f"m{unique}": {"method": "clip-ad", "class_name": "screw", "domain": "texture"},
        f"n{unique}": {"method": "anoclip", "options": {"image_views": "none"}},
    }
    core = InspectorCore(_config(redis_server, cams), store)
    bottle, cable, screw, texture = cams
    requests = [_request(bottle, "1", 1), _request(cable, "1", 2), _request(texture, "1", 3),
                _request(screw, "1", 4), _request(bottle, "2", 5), _request(texture, "2", 6)]  # fmt: skip
    backbone = core.methods[core.camera_keys[bottle]].module.backbone
    forwards: list[int] = []
    hook = backbone.model.visual.conv1.register_forward_hook(lambda _, inputs, __: forwards.append(len(inputs[0])))
    try:
        acks = core.process(requests)
    finally:
        hook.remove()

    assert sorted(forwards) == [2, 4]  # clip-ad's path over the frames of three products, anoclip's over its two
    stages = core.describe()["image_stages"]
    assert (stages["batches"], stages["groups"], stages["forwards"], stages["frames"]) == (1, 4, 2, 6)
    for ack, request in zip(acks, requests, strict=True):
        alone = core.methods[core.camera_keys[request.camera]].module.predict([request.image]).scores[0].item()
        assert ack.status == "stored" and ack.score == pytest.approx(alone, abs=1e-5)


def test_a_model_that_breaks_after_scoring_fails_a_lone_frame_as_the_replicas_fault(
    redis_server: RedisServer, store: ResultStore, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    camera = f"k{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)
    (ack,) = core.process([_request(camera, "scored", 1)])
    assert ack.status == "stored"
    method = core.methods[core.camera_keys[camera]].module

    def broken(images):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(method, "predict_head", broken)  # the shared stages' head
    monkeypatch.setattr(method, "predict", broken)  # and the retries frame by frame
    with pytest.raises(ModelUnavailableError, match="every frame"):  # it cannot score what it scored before
        core.process([_request(camera, "lone", 2)])
    assert core.model_failures == 1


def test_the_record_read_earlier_takes_a_frame_id_from_one_read_later_in_any_order(
    redis_server: RedisServer, store: ResultStore, unique: str
) -> None:
    camera = f"o{unique}"
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store)

    def pair(frame_id: str) -> tuple[FrameRequest, FrameRequest]:
        earlier = dataclasses.replace(_request(camera, frame_id, 1, offset=10), content_digest="a" * 32)
        return earlier, dataclasses.replace(_request(camera, frame_id, 2, offset=11), content_digest="b" * 32)

    earlier, later = pair("x")
    assert [ack.status for ack in core.process([later])] == ["stored"]
    (ack,) = core.process([earlier])
    assert (ack.status, ack.rival_partition, ack.rival_offset) == ("replaced", 0, 11)
    (ack,) = core.process([later])  # re-delivered: refused before the model, naming the record kept
    assert (ack.status, ack.rival_partition, ack.rival_offset) == ("conflict", 0, 10)
    # Re-delivered, as after a replica that died between the write and its answer: the answer is given again,
    # else the replaced record would be committed with neither result nor dead letter (ingest letters it once).
    (ack,) = core.process([earlier])
    assert (ack.status, ack.rival_partition, ack.rival_offset) == ("replaced", 0, 11)
    assert store.get_result(camera, "x").digest == "a" * 32
    # In one batch, the later record first: the earlier one still keeps the id.
    earlier, later = pair("y")
    assert sorted(ack.status for ack in core.process([later, earlier])) in (["conflict", "stored"],
                                                                            ["replaced", "stored"])  # fmt: skip
    assert store.get_result(camera, "y").offset == 10


class RecordedMetrics:
    """Every metrics call, by name and arguments."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def __getattr__(self, name: str) -> object:
        return lambda *args, **kwargs: self.calls.append((name, args))


def test_a_frame_without_a_capture_time_is_stored_without_a_latency(
    redis_server: RedisServer, store: ResultStore, unique: str
) -> None:
    camera = f"t{unique}"
    metrics = RecordedMetrics()
    core = InspectorCore(_config(redis_server, {camera: {"method": "clip-ad"}}), store, metrics=metrics)
    unknown = dataclasses.replace(_request(camera, "no-clock", 1), capture_ts=0.0)
    assert [ack.status for ack in core.process([unknown, _request(camera, "clock", 2, offset=1)])] == ["stored"] * 2
    assert store.get_result(camera, "no-clock").capture_ts == 0.0
    latencies = [args[3] for name, args in metrics.calls if name == "stored"]
    assert latencies[0] is None and latencies[1] > 0


def test_a_frames_part_identity_reaches_its_stored_result_and_zsad_results(
    redis_server: RedisServer, store: ResultStore, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    camera = f"p{unique}"
    cameras = {camera: {"method": "clip-ad"}}
    core = InspectorCore(_config(redis_server, cameras), store)
    data = encode_png(_scene(96, 120))
    parts = [(H_PART_ID, b"P-0042"), (H_PART_SERIAL, b"SN 1234"), (H_PART_STATION, b"ST2")]
    record = _Record(camera.encode(), data, [*encode_headers("with-part", 1.0e9, "image/png"), *parts])
    plain = _Record(camera.encode(), data, encode_headers("no-part", 1.0e9, "image/png"), offset=1)
    sizes = model_input_sizes(core.config.cameras)
    requests = [decode_record(r, core.config.cameras, DEFAULT_LIMITS, input_sizes=sizes, budget=DecodeBudget(10**8))
                for r in (record, plain)]  # fmt: skip
    assert [ack.status for ack in core.process(requests)] == ["stored", "stored"]

    stored = store.get_result(camera, "with-part")
    assert (stored.part_id, stored.part_serial, stored.part_station) == ("P-0042", "SN 1234", "ST2")
    assert store.get_result(camera, "no-part").part_serial is None
    config_path = tmp_path / "config.yaml"
    document = {"redis": {"url": redis_server.url, "password": redis_server.password},
                "cameras": {camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5}}}  # fmt: skip
    config_path.write_text(yaml.safe_dump(document))
    assert main(["results", "--camera", camera, "--json", "--config", str(config_path)]) == 0
    listed = {row["frame_id"]: row for row in json.loads(capsys.readouterr().out)}
    assert {name: listed["with-part"][name] for name in ("part_id", "part_serial", "part_station")} == {
        "part_id": "P-0042", "part_serial": "SN 1234", "part_station": "ST2"}  # fmt: skip
    assert listed["no-part"]["part_serial"] is None
