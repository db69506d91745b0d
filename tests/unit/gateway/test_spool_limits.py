"""The disk spool: order kept across a restart, the byte limit refuses the newest frame, torn writes dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.config import ConfigError
from services.gateway.frames import GatewayFrame
from services.gateway.spool import DiskSpool


def _frame(number: int, size: int = 100) -> GatewayFrame:
    return GatewayFrame("cam", f"id-{number}", 1_700_000_000.0 + number, bytes([number % 256]) * size,
                        "image/jpeg", (("zsad-part-id", f"P{number}".encode()),))  # fmt: skip


def test_frames_come_back_in_order_with_their_headers_after_a_restart(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 10_000)
    for number in range(12):
        assert spool.append(_frame(number))
    reopened = DiskSpool(tmp_path, 10_000)
    assert len(reopened) == 12 and reopened.bytes == spool.bytes
    first = reopened.oldest(5, 1 << 20)
    assert [entry.frame for entry in first] == [_frame(n) for n in range(5)]
    reopened.remove(first)
    assert reopened.append(_frame(12))
    assert [entry.frame.frame_id for entry in reopened.oldest(100, 1 << 20)] == [f"id-{n}" for n in range(5, 13)]


def test_a_full_spool_refuses_the_new_frame_and_keeps_the_old_ones(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1_000)
    stored = 0
    while spool.append(_frame(stored)):
        stored += 1
    assert 0 < stored < 10 and spool.bytes <= 1_000
    assert [entry.frame.frame_id for entry in spool.oldest(100, 1 << 20)] == [f"id-{n}" for n in range(stored)]
    spool.remove(spool.oldest(1, 1 << 20))
    assert spool.append(_frame(99))  # room again once the oldest was sent


def test_a_batch_is_bounded_in_bytes_but_never_empty(tmp_path: Path) -> None:
    spool = DiskSpool(tmp_path, 1 << 20)
    for number in range(4):
        spool.append(_frame(number, size=1000))
    assert len(spool.oldest(10, 2500)) == 2
    assert len(spool.oldest(10, 10)) == 1


def test_a_write_cut_by_a_crash_is_dropped_at_start(tmp_path: Path) -> None:
    DiskSpool(tmp_path, 10_000).append(_frame(0))
    (tmp_path / "00000000000000000001.partial").write_bytes(b"torn")
    spool = DiskSpool(tmp_path, 10_000)
    assert len(spool) == 1 and not list(tmp_path.glob("*.partial"))


def test_a_limit_that_is_not_positive_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spool size limit"):
        DiskSpool(tmp_path, 0)
