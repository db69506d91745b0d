"""Broker unreachable while the folder fills: frames go to the disk spool, then reach the topic in order."""

from __future__ import annotations

import os
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

pytestmark = pytest.mark.integration
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
