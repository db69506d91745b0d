"""The sender with no broker listening: frames go to the spool in order, and once it is full new ones are refused
(the source is told, the refusal is counted), never acknowledged."""

from __future__ import annotations

from pathlib import Path

from services.config import KafkaConfig
from services.gateway.frames import GatewayFrame, Outcome
from services.gateway.metrics import GatewayMetrics
from services.gateway.sender import FrameSender
from services.gateway.spool import DiskSpool
from services.local_stack.service_processes import free_port


def _frame(number: int) -> GatewayFrame:
    return GatewayFrame("cam", f"id-{number}", 1_700_000_000.0 + number, b"\xff\xd8\xff" + bytes(997), "image/jpeg")


def test_without_a_broker_frames_are_spooled_until_full_then_refused(tmp_path: Path) -> None:
    kafka = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{free_port()}"])  # nothing listens there
    metrics = GatewayMetrics("cam")
    spool = DiskSpool(tmp_path, 4_500)  # room for four frames of about 1.1 kB
    sender = FrameSender(kafka, spool, metrics, max_frame_bytes=1 << 20,
                         producer_settings={"bootstrap_timeout_ms": 200})  # fmt: skip
    outcomes: dict[str, Outcome] = {}
    sender.start()
    for number in range(6):
        sender.submit(_frame(number), lambda frame, outcome: outcomes.__setitem__(frame.frame_id, outcome))
    assert sender.stop(30)
    assert outcomes == {"id-4": Outcome.REFUSED, "id-5": Outcome.REFUSED}
    assert [entry.frame.frame_id for entry in DiskSpool(tmp_path, 4_500).oldest(10, 1 << 20)] == [
        "id-0", "id-1", "id-2", "id-3"]  # fmt: skip
    assert metrics.value("zsad_gateway_frames_spooled_total") == 4
    assert metrics.value("zsad_gateway_frames_failed_total", reason="spool_full") == 2
    assert metrics.value("zsad_gateway_spool_bytes") == spool.bytes > 0
    assert metrics.value("zsad_gateway_frames_sent_total") == 0
