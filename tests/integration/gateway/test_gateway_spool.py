"""Broker unreachable while the folder fills: frames go to the disk spool, then reach the topic in order."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest
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

from services.frame_path.producer import ensure_topics
from services.gateway.folder_source import file_frame_id
from services.gateway.metrics import GatewayMetrics
from services.local_stack.service_processes import NoidaBroker, free_port
from services.records import H_FRAME_ID

pytestmark = [
    pytest.mark.integration,
    pytest.mark.queue_early(reason="a broker outage held for 30 s"),
]
FILES = 30


def test_frames_spooled_while_the_broker_is_down_arrive_in_order_when_it_returns(
    unique: str, tmp_path: Path
) -> None:
    port = free_port()
    kafka = gateway_kafka(f"127.0.0.1:{port}", unique, create=False)  # nothing listens there yet
    folder = tmp_path / "hot"
    folder.mkdir()
    metrics = GatewayMetrics("cam-spool")
    expected_ids = []
    with running_gateway(folder_source("cam-spool", folder, metrics, settle_s=0.0), kafka, tmp_path / "spool",
                         metrics, retry_s=0.2, max_retry_s=0.5):  # fmt: skip
        for number in range(FILES):
            path = folder / f"f{number:02d}.jpg"
            partial = path.with_name(f"{path.name}.tmp")  # written, dated, then renamed: never seen half-dated
            partial.write_bytes(image_bytes(number))
            os.utime(partial, (1_700_000_000 + number, 1_700_000_000 + number))  # the line's order
            partial.rename(path)
            stat = path.stat()
            expected_ids.append(file_frame_id(path.name, stat.st_size, stat.st_mtime_ns))
        wait_for(lambda: metrics.value("zsad_gateway_frames_spooled_total") == FILES, timeout_s=60,
                 what="every frame in the spool")  # fmt: skip
        assert metrics.value("zsad_gateway_spool_bytes") > 0
        assert names(folder / "done") == set(), "nothing is acknowledged while the broker is down"
        with NoidaBroker(port=port, data_dir=tmp_path / "broker"):
            ensure_topics(kafka)
            wait_for(lambda: len(names(folder / "done")) == FILES, timeout_s=60, what="every file in done/")
            records = read_frames(kafka, FILES)
    ids = [header(record, H_FRAME_ID) for record in records]
    assert list(dict.fromkeys(ids)) == expected_ids  # in order, none lost (a resend may repeat an id)
    assert metrics.value("zsad_gateway_spool_bytes") == 0
    assert not list((tmp_path / "spool").iterdir())


OUTAGE_S = 30.0
WRITE_EVERY_S = 0.5


def _drop(folder: Path, number: int) -> str:
    """Write one file as a vision PC does (temporary name, dated in line order, renamed); its frame id."""
    path = folder / f"g{number:03d}.jpg"
    partial = path.with_name(f"{path.name}.tmp")
    partial.write_bytes(image_bytes(1000 + number))
    os.utime(partial, (1_700_000_000 + number, 1_700_000_000 + number))
    partial.rename(path)
    stat = path.stat()
    return file_frame_id(path.name, stat.st_size, stat.st_mtime_ns)


def _keep_writing(folder: Path, first: int, seconds: float, ids: list[str]) -> int:
    """Drop a file every WRITE_EVERY_S for ``seconds``; the next file number."""
    number, deadline = first, time.monotonic() + seconds
    while time.monotonic() < deadline:
        ids.append(_drop(folder, number))
        number += 1
        time.sleep(WRITE_EVERY_S)
    return number


def test_a_30_s_broker_outage_while_the_folder_fills_loses_nothing_and_keeps_the_order(
    unique: str, tmp_path: Path
) -> None:
    """The issue's scenario: the broker stops for 30 s while files keep arriving, then comes back on the same
    port and data directory. Stopped with SIGTERM, not SIGKILL: noida-db keeps records in RAM and saves them on
    SIGTERM, so a SIGKILL would lose the records acknowledged before the outage, which is the broker's
    durability, not the gateway's. For the gateway both look the same: the port closes, connections drop."""
    port = free_port()
    data_dir = tmp_path / "broker"
    folder = tmp_path / "hot"
    folder.mkdir()
    metrics = GatewayMetrics("cam-outage")
    broker = NoidaBroker(port=port, data_dir=data_dir).start()
    kafka = gateway_kafka(f"127.0.0.1:{port}", unique)
    ids: list[str] = []
    try:
        with running_gateway(folder_source("cam-outage", folder, metrics, settle_s=0.0), kafka, tmp_path / "spool",
                             metrics, retry_s=0.5, max_retry_s=2.0):  # fmt: skip
            number = _keep_writing(folder, 0, 3.0, ids)
            wait_for(lambda: len(names(folder / "done")) == len(ids), timeout_s=30, what="the files before the outage")
            sent_before = len(ids)

            broker.stop()
            number = _keep_writing(folder, number, OUTAGE_S, ids)
            during = len(ids) - sent_before
            assert len(names(folder / "done")) == sent_before, "nothing is acknowledged while the broker is down"
            wait_for(lambda: metrics.value("zsad_gateway_frames_spooled_total") >= during, timeout_s=30,
                     what="every frame of the outage in the spool")  # fmt: skip
            assert metrics.value("zsad_gateway_spool_bytes") > 0

            broker = NoidaBroker(port=port, data_dir=data_dir).start()
            number = _keep_writing(folder, number, 2.0, ids)  # new files queue behind the spool
            wait_for(lambda: len(names(folder / "done")) == len(ids), timeout_s=60, what="every file in done/")
            records = read_frames(kafka, len(ids))
    finally:
        broker.stop()
    received = [header(record, H_FRAME_ID) for record in records]
    assert list(dict.fromkeys(received)) == ids  # every file's frame, in the order the files arrived
    repeated = [frame_id for frame_id, count in Counter(received).items() if count > 1]
    assert repeated == [], f"{len(repeated)} frames delivered more than once"
    assert metrics.value("zsad_gateway_spool_bytes") == 0 and not list((tmp_path / "spool").iterdir())
    assert during >= OUTAGE_S / WRITE_EVERY_S * 0.8, f"only {during} files written during the outage"
