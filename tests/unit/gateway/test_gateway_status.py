"""What ``zsad status`` says about a gateway, from its heartbeat hash and its counters."""

from __future__ import annotations

from services.cli.summaries import format_stack_state
from services.gateway.heartbeat import GatewayStatus, format_gateway_status, heartbeat_key
from services.gateway.metrics import GatewayMetrics
from services.local_stack.stack_process import StackState


def test_a_running_gateway_shows_its_counts_and_how_fresh_they_are() -> None:
    fields = {b"camera": b"cam1", b"kind": b"folder", b"state": b"running", b"pid": b"4242", b"host": b"line-pc",
              b"captured": b"12", b"sent": b"9", b"spooled": b"3", b"failed": b"1", b"spool_bytes": b"2048",
              b"updated_ts": b"1000.0"}  # fmt: skip
    status = GatewayStatus.from_fields("cam1", fields)
    assert (status.state, status.captured, status.sent, status.spooled, status.failed) == ("running", 12, 9, 3, 1)
    assert format_gateway_status(status, now=1004.0) == (
        "gateway cam1 (folder): running; captured 12, sent 9, spooled 3, failed 1, spool 2048 B; "
        "pid 4242 on line-pc, reported 4 s ago"
    )


def test_a_stopped_gateway_keeps_its_final_counts() -> None:
    status = GatewayStatus.from_fields("cam1", {"state": "stopped", "kind": "stream", "sent": "7", "updated_ts": "5"})
    assert format_gateway_status(status, now=65.0).startswith("gateway cam1 (stream): stopped; captured 0, sent 7")


def test_a_gateway_without_a_heartbeat_is_not_reporting() -> None:
    status = GatewayStatus.from_fields("cam2", {})
    assert status.state == "not reporting"
    assert format_gateway_status(status) == "gateway cam2: not reporting"


def test_unreadable_counts_read_as_zero_rather_than_failing_the_status() -> None:
    assert GatewayStatus.from_fields("cam1", {"state": "running", "sent": "many"}).sent == 0


def test_the_heartbeat_key_shares_the_cameras_hash_tag() -> None:
    assert heartbeat_key("cam1") == "zsad:{cam1}:gateway"


def test_metric_totals_add_failures_of_every_reason() -> None:
    metrics = GatewayMetrics("cam1")
    metrics.captured()
    metrics.captured()
    metrics.sent(0.1)
    metrics.spooled(300)
    metrics.failed("spool_full")
    metrics.failed("not_an_image")
    assert metrics.totals() == {"captured": 2, "sent": 1, "spooled": 1, "failed": 2, "spool_bytes": 300}


def test_zsad_up_names_the_gateways_it_started_and_their_logs() -> None:
    state = StackState(pid=1, status="ready", started_at=0.0, config_path="/state/stack/config.yaml",
                       gateways={"cam1": 4242})  # fmt: skip
    assert "gateway     cam1 (pid 4242, log /state/stack/gateway-cam1.log)" in format_stack_state(state).splitlines()
