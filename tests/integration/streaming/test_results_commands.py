"""``zsad results`` and ``zsad show`` against a real redis-server and a real broker (noida-db).

One module-wide setup: a topic with real frames, results written through the real store pointing at their
partitions and offsets, and a config file naming both services, as ``zsad up`` would write it.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from services.cli.main import main
from services.config import ZsadConfig, load_config
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer
from services.read_models import OverlayRenderer, text_fields
from services.stores.result_store import FrameResult, ResultStore, result_key
from zsad_core.preprocess import encode_png
from zsad_core.visualize import overlay

pytestmark = pytest.mark.integration
FRAME_SHAPE = (48, 64, 3)
MAP_SHAPE = (20, 24)
ROI = [8, 4, 32, 24]  # x, y, w, h
LIVE_ROI = (16, 8, 40, 32)  # a live ROI change after the configured one: the crop that produced result r-2


@dataclass(frozen=True)
class Stack:
    config_path: str
    config: ZsadConfig
    camera: str
    roi_camera: str
    empty_camera: str
    frame: np.ndarray  # RGB, as produced
    partition: int
    offset: int


def hot_map() -> np.ndarray:
    anomaly_map = np.full(MAP_SHAPE, 0.1, np.float32)
    anomaly_map[5:12, 6:14] = 0.9
    return anomaly_map


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, noida_broker: NoidaBroker) -> Stack:
    suffix = uuid.uuid4().hex[:10]
    camera, roi_camera, empty_camera = f"cam-{suffix}", f"roi-{suffix}", f"empty-{suffix}"
    document = {
        "kafka": {
            "bootstrap_servers": [noida_broker.bootstrap_servers],
            "frames_topic": f"frames-{suffix}",
            "dlq_topic": f"frames-{suffix}.dlq",
            "partitions": 1,
        },
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {
            camera: {"method": "winclip", "class_name": "bottle", "threshold": 0.5},
            roi_camera: {"method": "winclip", "class_name": "bottle", "threshold": 0.5, "roi": ROI},
            empty_camera: {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5},
        },
    }
    config_path = tmp_path_factory.mktemp("results-config") / "config.yaml"
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path)
    ensure_topics(config.kafka)

    frame = np.random.default_rng(0).integers(0, 256, FRAME_SHAPE, dtype=np.uint8)
    capture_ts = time.time() - 1.5
    with FrameProducer.from_config(config) as producer:
        first = producer.send_frame(camera, encode_png(frame), frame_id="f-a", capture_ts=capture_ts).get(timeout=10)
        roi = producer.send_frame(roi_camera, encode_png(frame), frame_id="r-1", capture_ts=capture_ts).get(timeout=10)
        live = producer.send_frame(roi_camera, encode_png(frame), frame_id="r-2", capture_ts=capture_ts).get(timeout=10)

    def result(
        cam: str,
        frame_id: str,
        score: float,
        partition: int = -1,
        offset: int = -1,
        roi: tuple[int, int, int, int] | None = None,
        **extra: str,
    ) -> FrameResult:
        return FrameResult(
            cam, frame_id, score=score, threshold=0.5, method="winclip", anomaly_map=hot_map(), prompt_version="v2",
            partition=partition, offset=offset, capture_ts=capture_ts, infer_ts=capture_ts + 0.5, roi=roi, **extra,
        )  # fmt: skip

    store = ResultStore.from_config(config)
    try:
        store.write_results([
            result(camera, "f-a", 0.9, first.partition, first.offset),
            result(camera, "f-b", 0.2),
            result(camera, "f-c", 0.5, reference_version="refs-v3", calibration_version="cal-v2",
                   regions="[[1,2,3,4,12,0.9,0.7],[5,6,2,2,4,0.8,0.6]]"),
            result(camera, "f-wrong", 0.3, first.partition, first.offset),  # the offset holds frame f-a
            result(camera, "f-gone", 0.1, first.partition, first.offset + 1000),
            result(roi_camera, "r-1", 0.7, roi.partition, roi.offset),
            result(roi_camera, "r-2", 0.7, live.partition, live.offset, roi=LIVE_ROI),
        ])  # fmt: skip
    finally:
        store.close()
    return Stack(str(config_path), config, camera, roi_camera, empty_camera, frame, first.partition, first.offset)


def run(stack: Stack, *argv: str) -> int:
    return main([*argv, "--config", stack.config_path])


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_recent_table(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stack, "results", "--camera", stack.camera) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["FRAME", "SCORE"]
    assert [line.split()[0] for line in lines[1:]] == ["f-gone", "f-wrong", "f-c", "f-b", "f-a"]  # newest first
    assert lines[3].split()[:9] == ["f-c", "0.5000", "reject", "0.5000", "winclip", "v2", "refs-v3", "cal-v2", "2"]
    assert lines[4].split()[:3] == ["f-b", "0.2000", "pass"]
    row = lines[-1].split()
    assert row[:9] == ["f-a", "0.9000", "reject", "0.5000", "winclip", "v2", "-", "-", "-"]
    assert row[-1] == f"{stack.partition}:{stack.offset}"
    assert 1000 < float(row[-2]) < 60_000  # capture 1.5 s before the write


def test_worst_orders_by_score(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stack, "results", "--camera", stack.camera, "--worst", "3") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [(line.split()[0], line.split()[1]) for line in lines[1:]] == [
        ("f-a", "0.9000"), ("f-c", "0.5000"), ("f-wrong", "0.3000"),
    ]  # fmt: skip


def test_json(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stack, "results", "--camera", stack.camera, "--recent", "2", "--json") == 0
    records = json.loads(capsys.readouterr().out)
    assert [record["frame_id"] for record in records] == ["f-gone", "f-wrong"]
    record = records[1]
    assert record["score"] == 0.3 and record["label"] == 0 and record["threshold"] == 0.5
    assert (record["method"], record["prompt_version"]) == ("winclip", "v2")
    assert (record["partition"], record["offset"]) == (stack.partition, stack.offset)
    assert record["capture_time"].endswith("+00:00") and record["latency_ms"] > 1000


def test_empty_and_unknown_camera(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(stack, "results", "--camera", stack.empty_camera) == 0
    assert capsys.readouterr().out.strip() == f"no results for camera {stack.empty_camera}"
    assert run(stack, "results", "--camera", "nope", "--worst", "5") == 2
    err = capsys.readouterr().err
    assert "unknown_camera" in err and "'nope'" in err and stack.camera in err


def test_show_overlays_the_frame_from_kafka(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "overlay.png"
    assert run(stack, "show", "--camera", stack.camera, "--frame", "f-a", "--out", str(out)) == 0
    assert "warning" not in capsys.readouterr().err
    written = read_rgb(out)
    assert written.shape == FRAME_SHAPE
    assert np.abs(written.astype(int) - stack.frame.astype(int)).mean() > 10
    assert np.array_equal(written, overlay(stack.frame, hot_map(), threshold=0.5))  # the map is stored losslessly


def test_show_crops_to_the_roi(stack: Stack, tmp_path: Path) -> None:
    out = tmp_path / "roi.png"
    assert run(stack, "show", "--camera", stack.roi_camera, "--frame", "r-1", "--out", str(out)) == 0
    x, y, w, h = ROI
    assert np.array_equal(read_rgb(out), overlay(stack.frame[y : y + h, x : x + w], hot_map(), threshold=0.5))


def test_show_and_the_web_view_crop_as_the_result_was_cropped_after_a_live_roi_change(
    stack: Stack, tmp_path: Path
) -> None:
    x, y, w, h = LIVE_ROI
    expected = overlay(stack.frame[y : y + h, x : x + w], hot_map(), threshold=0.5)
    out = tmp_path / "live.png"
    assert run(stack, "show", "--camera", stack.roi_camera, "--frame", "r-2", "--out", str(out)) == 0
    assert np.array_equal(read_rgb(out), expected)
    store = ResultStore.from_config(stack.config)
    try:
        fields = text_fields(store.client.hgetall(result_key(stack.roi_camera, "r-2")))
        assert fields["roi"] == ",".join(map(str, LIVE_ROI))
        renderer = OverlayRenderer(stack.config, store)
        assert np.array_equal(renderer.frame(stack.roi_camera, fields), stack.frame[y : y + h, x : x + w])
    finally:
        store.close()


@pytest.mark.parametrize(
    ("frame_id", "why"),
    [("f-wrong", "holds frame 'f-a', not 'f-wrong'"), ("f-gone", "is not in the topic"), ("f-b", "no Kafka position")],
)
def test_show_falls_back_to_the_map(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str], frame_id: str, why: str
) -> None:
    out = tmp_path / "map.png"
    assert run(stack, "show", "--camera", stack.camera, "--frame", frame_id, "--out", str(out)) == 0
    err = capsys.readouterr().err
    assert "warning" in err and why in err
    assert cv2.imread(str(out)).shape == (*MAP_SHAPE, 3)


def test_show_missing_frame(stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "none.png"
    assert run(stack, "show", "--camera", stack.camera, "--frame", "never", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "no_result" in err and "'never'" in err and stack.camera in err
    assert not out.exists()
