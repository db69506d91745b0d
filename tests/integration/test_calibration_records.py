"""Calibration records and live camera settings against a real redis-server, through the ``zsad`` commands.

Each test has its own registry namespace and camera ids, so tests sharing the session's Redis never meet. The
camera runs AnoCLIP on the tiny random-weight ViT: the pipeline is real, the scores are not a detector.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from services.cli.cmd_demo import calibrate_demo_cameras
from services.cli.main import main
from services.config import ZsadConfig, load_config
from services.frame_path.producer import FrameProducer, ensure_topics
from services.frame_path.settings_follower import CameraSettingsFollower
from services.local_stack.service_processes import NoidaBroker, RedisServer
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettings, CameraSettingsStore
from services.stores.operator_marks import MarkError, mark_frame, marked_frames
from services.stores.result_store import FrameResult, ResultStore, result_key
from zsad_core.data.synthetic import SyntheticDataset
from zsad_core.imageio import encode_png

pytestmark = pytest.mark.integration
FRAME = 64


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


@pytest.fixture
def config_path(tmp_path: Path, redis_server: RedisServer, unique: str) -> Path:
    document = {
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "registry": {"root": str(tmp_path / "registry"), "namespace": f"test:{unique}:registry"},
        "limits": {"max_side": 100},
        "cameras": {
            "cam1": {"method": "anoclip", "class_name": "object", "threshold": 0.5, "image_size": 64,
                     "options": {"image_views": "none"}},
            "cam2": {"method": "anoclip", "class_name": "object", "threshold": 0.5, "image_size": 64,
                     "roi": [40, 40, 40, 40], "options": {"image_views": "none"}},
        },
        "serving": {"backbone": "zsad-tiny-vit", "pretrained": False, "max_batch_size": 32},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def config(config_path: Path) -> ZsadConfig:
    return load_config(config_path)


@pytest.fixture
def store(config: ZsadConfig, client: redis.Redis) -> CameraSettingsStore:
    registry = ArtifactRegistry(config.registry.root, client, namespace=config.registry.namespace)
    return CameraSettingsStore(registry, config)


def write_goods(folder: Path, count: int, *, seed: int = 0, size: int = FRAME) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    goods = SyntheticDataset(seed=seed, classes=1, per_class=count, size=size, anomaly_ratio=0)
    for index in range(count):
        (folder / f"good-{index:03d}.png").write_bytes(encode_png(goods[index].image))
    return folder


def run(*argv: str) -> int:
    return main(list(argv))


def state(store: CameraSettingsStore, camera: str = "cam1") -> tuple:
    """Everything a refused operation must leave alone."""
    client, ns = store.client, store.registry.namespace
    return (
        [s.to_dict() for s in store.settings_history(camera)],
        store.calibration_history(camera),
        client.get(f"{ns}:camera:{camera}:calibration:seq"),
        client.xlen(store.registry.audit_key),
    )


def audit_rows(store: CameraSettingsStore, n: int) -> list[tuple[str, ...]]:
    keys = ("action", "method", "alias", "from_version", "to_version", "outcome", "actor", "reason")
    return [tuple(entry[key] for key in keys) for entry in store.registry.audit(n)]


def test_calibrate_then_roll_back_with_exact_history_and_audit(tmp_path, config_path, store, capsys) -> None:
    goods = write_goods(tmp_path / "goods", 40)
    assert run("calibrate", "--camera", "cam1", "--good", str(goods), "--config", str(config_path),
               "--actor", "alice", "--reason", "first") == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "40 good frames" in printed and "target 1.00% false-reject" in printed and "stored calibration c1" in printed
    first = store.calibration("cam1")
    assert first.version == "c1" and first.evidence["frame_size"] == [FRAME, FRAME]
    assert first.evidence["image"]["n_good"] == 40 and first.evidence["image"]["rule"] == "false_reject"
    assert first.image_threshold == pytest.approx(first.evidence["good_scores"]["max"])  # 40 goods: top score

    with store.client.pubsub() as pubsub:
        pubsub.subscribe(store.registry.events_channel)
        assert pubsub.get_message(timeout=5.0)["type"] == "subscribe"
        assert run("calibrate", "--camera", "cam1", "--good", str(goods), "--false-reject", "0.2",
                   "--config", str(config_path), "--actor", "bob", "--reason", "looser") == 0  # fmt: skip
        event = json.loads(pubsub.get_message(timeout=5.0)["data"])
    assert event == {"camera": "cam1", "kind": "settings", "version": "s2", "action": "calibrate"}
    second = store.calibration("cam1")
    assert second.version == "c2" and second.image_threshold < first.image_threshold
    current = store.settings("cam1")
    assert (current.version, current.calibration, current.threshold) == ("s2", "c2", second.image_threshold)
    assert current.pixel_threshold == second.pixel_threshold

    assert run("calibration", "rollback", "--camera", "cam1", "--config", str(config_path),
               "--actor", "carol", "--reason", "too loose") == 0  # fmt: skip
    assert store.calibration_history("cam1") == ["c1"]
    assert [record.version for record in store.calibrations("cam1")] == ["c1", "c2"]
    restored = store.settings("cam1")
    assert (restored.version, restored.calibration, restored.threshold, restored.pixel_threshold) == (
        "s3", "c1", first.image_threshold, first.pixel_threshold,
    )  # fmt: skip
    assert [s.version for s in store.settings_history("cam1")] == ["s1", "s2", "s3"]
    assert audit_rows(store, 7) == [
        ("calibration_rollback", "anoclip", "cam1:settings", "s2", "s3", "applied", "carol", "too loose"),
        ("calibration_rollback", "anoclip", "cam1:calibration", "c2", "c1", "applied", "carol", "too loose"),
        ("calibrate", "anoclip", "cam1:settings", "s1", "s2", "applied", "bob", "looser"),
        ("calibrate", "anoclip", "cam1:calibration", "c1", "c2", "applied", "bob", "looser"),
        ("calibrate", "anoclip", "cam1:settings", "", "s1", "applied", "alice", "first"),
        ("calibrate", "anoclip", "cam1:calibration", "", "c1", "applied", "alice", "first"),
    ]

    before = state(store)
    capsys.readouterr()
    assert run("calibration", "rollback", "--camera", "cam1", "--config", str(config_path)) == 2
    assert "no earlier calibration to roll back to (it is c1)" in capsys.readouterr().err
    assert state(store) == before
    assert run("calibration", "list", "--camera", "cam1", "--config", str(config_path)) == 0
    listing = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in listing] == [["c1", "current"], ["c2", "-"]]
    assert run("camera", "set", "--camera", "cam1", "--threshold", "0.9", "--config", str(config_path)) == 0
    by_hand = store.settings("cam1")
    assert (by_hand.version, by_hand.threshold, by_hand.calibration) == ("s4", 0.9, None)
    assert by_hand.pixel_threshold == first.pixel_threshold


@pytest.mark.parametrize(
    ("setup", "camera", "reason"),
    [
        ("empty", "cam1", "bad_calibration_input"),
        ("mixed_sizes", "cam1", "bad_calibration_input"),
        ("over_limits", "cam1", "too_large"),
        ("roi_outside", "cam2", "bad_calibration_input"),
        ("unknown_camera", "cam9", "unknown_camera"),
    ],
)
def test_bad_calibration_input_is_refused_and_changes_nothing(
    setup, camera, reason, tmp_path, config_path, store, capsys
) -> None:
    goods = write_goods(tmp_path / "goods", 12)
    assert run("calibrate", "--camera", "cam1", "--good", str(goods), "--config", str(config_path)) == 0
    folder = tmp_path / setup
    if setup == "empty":
        folder.mkdir()
        (folder / "notes.txt").write_text("not an image")
    elif setup == "mixed_sizes":
        write_goods(folder, 3)
        (folder / "z-other.png").write_bytes(encode_png(np.zeros((48, 64, 3), np.uint8)))
    elif setup == "over_limits":
        write_goods(folder, 2, size=128)  # limits.max_side is 100
    else:
        folder = goods  # 64 x 64 frames: cam2's roi [40, 40, 40, 40] does not fit; cam9 is not configured
    before = {name: state(store, name) for name in ("cam1", "cam2")}
    capsys.readouterr()
    assert run("calibrate", "--camera", camera, "--good", str(folder), "--config", str(config_path)) == 2
    assert f"zsad: error ({reason})" in capsys.readouterr().err
    assert {name: state(store, name) for name in ("cam1", "cam2")} == before


def test_live_settings_change_audit_and_reach_a_follower(config_path, store, capsys) -> None:
    seen: list[CameraSettings] = []
    arrived = threading.Condition()

    def on_change(settings: CameraSettings) -> None:
        with arrived:
            seen.append(settings)
            arrived.notify_all()

    def wait_for(count: int) -> None:
        with arrived:
            assert arrived.wait_for(lambda: len(seen) >= count, timeout=10.0), [s.version for s in seen]

    follower = CameraSettingsFollower(store, ["cam1"], on_change, check_every_s=60.0).start()
    try:
        wait_for(1)
        assert seen[0] == CameraSettings.from_config("cam1", store.config.camera("cam1"))
        cfg = ("--config", str(config_path), "--actor", "dora")
        changes = [
            ("set", "--threshold", "0.7", "--roi", "0,0,32,32", "--min-area", "5", "--pixel-threshold", "0.6",
             "--reason", "tighter"),
            ("pause",),
            ("set", "--roi", "none"),
            ("resume",),
        ]  # fmt: skip
        for count, (verb, *options) in enumerate(changes, start=2):
            assert run("camera", verb, "--camera", "cam1", *options, *cfg) == 0
            wait_for(count)  # one change at a time: a follower reads the newest version when notified
    finally:
        follower.stop()
    assert [(s.version, s.threshold, s.roi, s.paused, s.min_area, s.pixel_threshold) for s in seen] == [
        (None, 0.5, None, False, 0, None),
        ("s1", 0.7, (0, 0, 32, 32), False, 5, 0.6),
        ("s2", 0.7, (0, 0, 32, 32), True, 5, 0.6),
        ("s3", 0.7, None, True, 5, 0.6),
        ("s4", 0.7, None, False, 5, 0.6),
    ]
    assert [row[2:5] for row in audit_rows(store, 4)] == [
        ("cam1:settings", "s3", "s4"), ("cam1:settings", "s2", "s3"), ("cam1:settings", "s1", "s2"),
        ("cam1:settings", "", "s1"),
    ]  # fmt: skip
    assert store.registry.audit(4)[-1]["reason"] == "tighter"

    before = state(store)
    capsys.readouterr()
    for bad in (["--threshold", "-1"], ["--roi", "0,0,0,5"], ["--prompt-version", "champion"]):
        assert run("camera", "set", "--camera", "cam1", *bad, "--config", str(config_path)) == 2
        assert "zsad: error (bad_settings)" in capsys.readouterr().err
    assert state(store) == before
    assert run("camera", "show", "--camera", "cam1", "--config", str(config_path)) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "s4"


def test_one_cameras_unreadable_settings_never_hold_back_the_other_cameras(store: CameraSettingsStore) -> None:
    ns = store.registry.namespace
    store.client.set(f"{ns}:camera:cam1:settings:s1", "{not json")  # a damaged record, current for cam1
    store.client.rpush(f"{ns}:camera:cam1:settings:history", "s1")
    seen: list[CameraSettings] = []
    arrived = threading.Condition()

    def on_change(settings: CameraSettings) -> None:
        with arrived:
            seen.append(settings)
            arrived.notify_all()

    follower = CameraSettingsFollower(store, ["cam1", "cam2"], on_change, check_every_s=60.0).start()
    try:
        with arrived:
            assert arrived.wait_for(lambda: len(seen) >= 1, timeout=10.0)
        store.update("cam2", {"threshold": 0.7}, actor="test", reason="tighter")
        with arrived:
            assert arrived.wait_for(lambda: len(seen) >= 2, timeout=10.0), [s.version for s in seen]
    finally:
        follower.stop()
    assert [(s.camera, s.version, s.threshold) for s in seen] == [("cam2", None, 0.5), ("cam2", "s1", 0.7)]


def test_operator_marks(client: redis.Redis, unique: str) -> None:
    camera = f"cam-{unique}"
    with pytest.raises(MarkError, match="no stored result"):
        mark_frame(client, camera, "f1", "good")
    for frame_id in ("f1", "f2", "f3"):
        client.hset(result_key(camera, frame_id), mapping={"score": "0.1"})
    mark_frame(client, camera, "f1", "good", at=1.0)
    mark_frame(client, camera, "f2", "good", at=2.0)
    mark_frame(client, camera, "f3", "bad", at=3.0)
    mark_frame(client, camera, "f2", "bad", at=4.0)  # re-marked: moves, never in both
    assert marked_frames(client, camera, "good", 10) == ["f1"]
    assert marked_frames(client, camera, "bad", 10) == ["f2", "f3"]
    assert marked_frames(client, camera, "bad", 1) == ["f2"]
    with pytest.raises(MarkError, match="one of"):
        mark_frame(client, camera, "f1", "maybe")


def test_calibrate_from_frames_marked_good_in_the_stream(
    tmp_path, config_path, store, client, noida_broker: NoidaBroker, unique, capsys
) -> None:
    document = yaml.safe_load(config_path.read_text())
    document["kafka"] = {"bootstrap_servers": [noida_broker.bootstrap_servers], "frames_topic": f"frames-{unique}",
                         "dlq_topic": f"frames-{unique}.dlq", "partitions": 1}  # fmt: skip
    config_path.write_text(yaml.safe_dump(document))
    config = load_config(config_path)
    ensure_topics(config.kafka)
    goods = SyntheticDataset(seed=3, classes=1, per_class=12, size=FRAME, anomaly_ratio=0)
    results, folder = [], tmp_path / "same-goods"
    folder.mkdir()
    with FrameProducer.from_config(config) as producer:
        for index in range(12):
            data = encode_png(goods[index].image)
            sent = producer.send_frame("cam1", data, frame_id=f"f{index}", capture_ts=time.time()).get(timeout=10)
            results.append(FrameResult("cam1", f"f{index}", score=0.1, threshold=0.5, method="anoclip",
                                       partition=sent.partition, offset=sent.offset))  # fmt: skip
            if index < 10:
                (folder / f"f{index:02d}.png").write_bytes(data)
    writer = ResultStore(client)
    writer.write_results(results)
    for index in range(12):
        mark_frame(client, "cam1", f"f{index}", "good" if index != 11 else "bad", at=float(index))
    client.delete(result_key("cam1", "f10"))  # expired since it was marked: skipped

    assert run("calibrate", "--camera", "cam1", "--from-stream", "50", "--config", str(config_path)) == 0
    assert "10 good frames from stream:cam1" in capsys.readouterr().out
    streamed = store.calibration("cam1")
    assert streamed.evidence["image"]["n_good"] == 10 and streamed.evidence["frame_size"] == [FRAME, FRAME]
    assert run("calibrate", "--camera", "cam1", "--good", str(folder), "--config", str(config_path)) == 0
    from_folder = store.calibration("cam1")
    assert from_folder.version == "c2"
    # The same ten frames in another order: batches differ, so scores agree to float precision only.
    assert from_folder.evidence["good_scores"] == pytest.approx(streamed.evidence["good_scores"], abs=1e-6)
    assert from_folder.image_threshold == pytest.approx(streamed.image_threshold, abs=1e-6)
    assert from_folder.pixel_threshold == pytest.approx(streamed.pixel_threshold, abs=1e-6)


def test_the_demo_calibrates_its_cameras_on_good_synthetic_frames_and_the_replicas_follow(
    tmp_path: Path, redis_server: RedisServer, unique: str, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    camera = {"method": "anoclip", "class_name": "object", "threshold": 0.5, "image_size": 64,
              "options": {"image_views": "none"}}  # fmt: skip
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "registry": {"root": str(tmp_path / "registry"), "namespace": f"test:{unique}:registry"},
        "cameras": {"cam1": camera, "cam2": camera},
        "serving": {"backbone": "zsad-tiny-vit", "pretrained": False, "max_batch_size": 32},
    }))  # fmt: skip
    config = load_config(path)
    store = CameraSettingsStore(ArtifactRegistry(config.registry.root, client, namespace=config.registry.namespace),
                                config)  # fmt: skip
    # cam2 was calibrated by an engineer on real goods: the demo must not overwrite that.
    engineers, _ = store.record_calibration("cam2", image_threshold=0.8, pixel_threshold=None, evidence={},
                                            actor="dora", reason="line goods")  # fmt: skip
    followed: dict[str, CameraSettings] = {}
    arrived = threading.Condition()

    def on_change(settings: CameraSettings) -> None:  # what a replica applies: its decisions use these thresholds
        with arrived:
            followed[settings.camera] = settings
            arrived.notify_all()

    follower = CameraSettingsFollower(store, ["cam1", "cam2"], on_change, check_every_s=60.0).start()
    try:
        for run_number, version in ((1, "c1"), (2, "c2")):  # a second demo recalibrates what the demo calibrated
            calibrate_demo_cameras(config, ["cam1", "cam2"], 8)
            record = store.calibration("cam1")
            assert (record.version, record.created_by) == (version, "zsad demo"), run_number
            assert record.evidence["good_scores"]["n"] == 8 and record.evidence["frame_size"] == [256, 256]
            with arrived:
                assert arrived.wait_for(lambda v=version: getattr(followed.get("cam1"), "calibration", None) == v,
                                        timeout=10.0)  # fmt: skip
            assert followed["cam1"].threshold == record.image_threshold != 0.5
            assert followed["cam1"].pixel_threshold == record.pixel_threshold
            assert store.calibration("cam2") == engineers and followed["cam2"].threshold == 0.8
    finally:
        follower.stop()
    out = capsys.readouterr().out
    assert "cam1            calibration c2 on 8 good synthetic frames: threshold" in out
    assert "cam2            keeps calibration c1: threshold 0.8" in out
