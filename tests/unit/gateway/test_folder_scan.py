"""When the folder source considers a file complete, and what one scan submits (no broker: frames are collected)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np

from services.config import LimitsConfig
from services.gateway.encoding import FrameEncoding
from services.gateway.folder_source import FolderSettings, FolderSource, file_frame_id
from services.gateway.frames import GatewayFrame, Outcome, OutcomeCallback
from services.gateway.metrics import GatewayMetrics
from zsad_core.imageio import encode_jpeg

JPEG = encode_jpeg(np.full((16, 16, 3), 90, dtype=np.uint8))


class Collected:
    """What a scan submitted, with the callbacks the sender would call."""

    def __init__(self) -> None:
        self.frames: list[tuple[GatewayFrame, OutcomeCallback]] = []

    def __call__(self, frame: GatewayFrame, on_outcome: OutcomeCallback) -> None:
        self.frames.append((frame, on_outcome))


def _source(folder: Path, settle_s: float = 0.0, **settings: object) -> FolderSource:
    return FolderSource("cam", FolderSettings(path=folder, done=folder / "done", failed=folder / "failed",
                                              settle_s=settle_s, rescan_s=0.05, **settings),  # type: ignore[arg-type]
                        encoding=FrameEncoding(), limits=LimitsConfig(), metrics=GatewayMetrics("cam"))  # fmt: skip


def test_a_file_is_read_only_after_it_stayed_unchanged_for_the_settle_time(tmp_path: Path) -> None:
    source, submit = _source(tmp_path, settle_s=0.3), Collected()
    (tmp_path / "a.jpg").write_bytes(JPEG[:50])
    assert source.scan(submit) == 0
    time.sleep(0.2)
    with open(tmp_path / "a.jpg", "ab") as handle:  # the writer goes on before the settle time ran out
        handle.write(JPEG[50:])
    assert source.scan(submit) == 0
    time.sleep(0.2)
    assert source.scan(submit) == 0  # 0.2 s since the last change
    time.sleep(0.15)
    assert source.scan(submit) == 1
    assert submit.frames[0][0].payload == JPEG


def test_in_progress_names_and_sidecars_are_never_frames(tmp_path: Path) -> None:
    for name in (".hidden.jpg", "a.jpg.tmp", "a.jpg.part", "x.json", "other.jpeg"):
        (tmp_path / name).write_bytes(JPEG)
    source, submit = _source(tmp_path, pattern="*.jpg"), Collected()
    assert source.scan(submit) == 0
    (tmp_path / "a.jpg.part").rename(tmp_path / "a.jpg")
    assert source.scan(submit) == 1


def test_a_file_in_flight_is_not_submitted_twice_and_a_refused_one_comes_back(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(JPEG)
    source, submit = _source(tmp_path), Collected()
    assert source.scan(submit) == 1
    assert source.scan(submit) == 0
    frame, on_outcome = submit.frames[0]
    on_outcome(frame, Outcome.REFUSED)
    assert source.scan(submit) == 1
    assert submit.frames[1][0].frame_id == frame.frame_id  # the same file, the same id
    submit.frames[1][1](frame, Outcome.ACKNOWLEDGED)
    assert (tmp_path / "done" / "a.jpg").read_bytes() == JPEG and not (tmp_path / "a.jpg").exists()


def test_the_frame_id_follows_name_size_and_time(tmp_path: Path) -> None:
    path = tmp_path / "part 7.jpg"
    path.write_bytes(JPEG)
    stat = path.stat()
    frame_id = file_frame_id(path.name, stat.st_size, stat.st_mtime_ns)
    assert frame_id.startswith("part_7-") and frame_id == file_frame_id(path.name, stat.st_size, stat.st_mtime_ns)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert file_frame_id(path.name, stat.st_size, stat.st_mtime_ns + 1) != frame_id


def test_oldest_files_are_submitted_first(tmp_path: Path) -> None:
    for number, name in enumerate(("c.jpg", "a.jpg", "b.jpg")):
        (tmp_path / name).write_bytes(JPEG)
        os.utime(tmp_path / name, (1_700_000_000 + number, 1_700_000_000 + number))
    submit = Collected()
    _source(tmp_path).scan(submit)
    assert [frame.capture_ts for frame, _ in submit.frames] == [1_700_000_000, 1_700_000_001, 1_700_000_002]


def test_a_folder_that_disappears_for_a_while_is_retried_and_counted_as_a_reconnect(tmp_path: Path) -> None:
    folder = tmp_path / "share"
    folder.mkdir()
    source, submit, stop = _source(folder), Collected(), threading.Event()
    runner = threading.Thread(target=source.run, args=(submit, stop), daemon=True)
    folder.rename(tmp_path / "unmounted")  # the share goes away
    runner.start()
    time.sleep(0.3)
    (tmp_path / "unmounted").rename(folder)
    (folder / "a.jpg").write_bytes(JPEG)
    deadline = time.monotonic() + 10
    while not submit.frames and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    runner.join(5)
    assert len(submit.frames) == 1
    assert source.metrics.value("zsad_gateway_source_reconnects_total") == 1
