"""The hot-folder gateway against a real broker, read back from the topic: complete files only, exactly once
after dedup by frame id, ``done/`` only after the acknowledgement, invalid files in ``failed/`` with a reason."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from gateway_helpers import (
    folder_source,
    gateway_kafka,
    header,
    image_bytes,
    names,
    read_frames,
    running_gateway,
    wait_for,
)

from services.gateway.folder_source import ERROR_SUFFIX
from services.gateway.metrics import GatewayMetrics
from services.local_stack.service_processes import NoidaBroker
from services.records import H_FRAME_ID

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def _write_slowly(path: Path, data: bytes, chunks: int, pause_s: float) -> None:
    step = -(-len(data) // chunks)
    with open(path, "wb") as handle:
        for start in range(0, len(data), step):
            handle.write(data[start : start + step])
            handle.flush()
            time.sleep(pause_s)


def test_complete_files_are_sent_once_and_invalid_ones_fail_with_a_reason(
    noida_broker: NoidaBroker, unique: str, tmp_path: Path
) -> None:
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    folder = tmp_path / "hot"
    folder.mkdir()
    expected = {f"early-{n}.jpg": image_bytes(n) for n in range(3)}  # present before the gateway starts
    for name, data in expected.items():
        (folder / name).write_bytes(data)
    metrics = GatewayMetrics("cam-folder")
    with running_gateway(folder_source("cam-folder", folder, metrics, settle_s=0.4), kafka, tmp_path / "spool",
                         metrics):  # fmt: skip
        slow = image_bytes(10, side=96, png=True)
        # Eight chunks 0.15 s apart: 1.2 s of writing, each pause shorter than the 0.4 s settle time.
        writer = threading.Thread(target=_write_slowly, args=(folder / "slow.png", slow, 8, 0.15))
        writer.start()
        late = image_bytes(11, side=64, png=True)
        # Write-then-rename: pauses longer than the settle time under an ignored name.
        _write_slowly(folder / "late.png.part", late, 3, 0.6)
        (folder / "late.png.part").rename(folder / "late.png")
        writer.join()
        expected |= {"slow.png": slow, "late.png": late}
        (folder / "cut.jpg").write_bytes(image_bytes(12)[:-200])
        (folder / "notes.txt").write_text("not an image\n")
        wait_for(lambda: names(folder / "done") >= set(expected), what="every valid file in done/")
        wait_for(lambda: len(names(folder / "failed")) == 4, what="both invalid files and their reasons in failed/")
    records = read_frames(kafka, len(expected))
    assert sorted(record.value for record in records) == sorted(expected.values())  # whole files, each once
    assert len({header(record, H_FRAME_ID) for record in records}) == len(expected)
    assert names(folder / "done") == set(expected)
    assert names(folder) == set()
    reasons = {name: json.loads((folder / "failed" / f"{name}{ERROR_SUFFIX}").read_text())["reason"]
               for name in ("cut.jpg", "notes.txt")}  # fmt: skip
    assert reasons == {"cut.jpg": "truncated", "notes.txt": "not_an_image"}
    assert metrics.value("zsad_gateway_frames_sent_total") == len(expected)
    assert metrics.value("zsad_gateway_frames_failed_total", reason="truncated") == 1


def test_two_hundred_files_at_once(noida_broker: NoidaBroker, unique: str, tmp_path: Path) -> None:
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    folder = tmp_path / "hot"
    folder.mkdir()
    expected = {f"f{n:03d}.jpg": image_bytes(n, side=16) for n in range(200)}
    for name, data in expected.items():
        (folder / name).write_bytes(data)
    metrics = GatewayMetrics("cam-many")
    with running_gateway(folder_source("cam-many", folder, metrics, settle_s=0.0), kafka, tmp_path / "spool", metrics):
        wait_for(lambda: len(names(folder / "done")) == 200, what="200 files in done/")
    records = read_frames(kafka, 200)
    assert len(records) == 200
    assert sorted(record.value for record in records) == sorted(expected.values())


def _start_gateway(config: Path, folder: Path, spool: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "services.cli.main", "gateway", "folder", "--config", str(config),
               "--camera", "cam-kill", "--path", str(folder), "--spool", str(spool), "--settle-s", "0",
               "--rescan-s", "0.05"]  # fmt: skip
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def test_a_killed_gateway_resends_under_the_same_ids_after_a_restart(
    noida_broker: NoidaBroker, unique: str, tmp_path: Path
) -> None:
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    config = tmp_path / "config.yaml"
    camera = {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
    config.write_text(yaml.safe_dump({"kafka": kafka.model_dump(mode="json"), "cameras": {"cam-kill": camera}}))
    folder, spool = tmp_path / "hot", tmp_path / "spool"
    folder.mkdir()
    # Large enough that the gateway is still busy when it is killed.
    expected = {f"f{n:03d}.png": image_bytes(n, side=256, png=True) for n in range(150)}
    for name, data in expected.items():
        (folder / name).write_bytes(data)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)

    gateway = _start_gateway(config, folder, spool)
    try:
        wait_for(lambda: len(names(folder / "done")) > 0, timeout_s=60, what="the first acknowledged file")
    finally:
        gateway.send_signal(signal.SIGKILL)
        gateway.wait(10)
    done_at_kill = len(names(folder / "done"))
    assert 0 < done_at_kill < len(expected), "the kill must come mid-way for this test to mean anything"

    gateway = _start_gateway(config, folder, spool)
    try:
        wait_for(lambda: names(folder / "done") == set(expected), timeout_s=60, what="every file in done/")
    finally:
        gateway.send_signal(signal.SIGTERM)
        _, errors = gateway.communicate(timeout=30)
    assert gateway.returncode == 0, errors.decode()[-2000:]

    records = read_frames(kafka, len(expected))
    by_id: dict[str, bytes] = {}
    for record in records:
        frame_id = header(record, H_FRAME_ID)
        assert by_id.setdefault(frame_id, record.value) == record.value, "one id, two different images"
    assert sorted(by_id.values()) == sorted(expected.values())  # every valid file exactly once after dedup
    assert names(folder / "failed") == {"broken.png", f"broken.png{ERROR_SUFFIX}"}
    assert names(folder) == set()
