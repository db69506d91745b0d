"""The configured gateways as ``zsad up`` runs them, without the rest of the stack: real ``zsad gateway run``
processes on the session broker and Redis, their heartbeat read by ``zsad status``, stopped as ``zsad down`` does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from gateway_helpers import gateway_kafka, image_bytes, names, read_frames, wait_for

from services.cli.main import main
from services.gateway.heartbeat import GatewayStatus, read_gateway_statuses
from services.local_stack.gateway_processes import gateway_log, start_gateways, stop_gateways
from services.local_stack.service_processes import NoidaBroker, RedisServer

pytestmark = pytest.mark.integration
FILES = 3


def _status(redis_server: RedisServer, camera: str) -> GatewayStatus:
    return read_gateway_statuses(redis_server.client(), [camera])[0]


def check_configured_folder_gateway_runs_and_reports(
    config_path: Path, camera: str, folder: Path, redis_server: RedisServer, stopping: Callable[[], None]
) -> None:
    """Files dropped into ``camera``'s configured folder end in done/ while its heartbeat counts them, and
    ``zsad status`` shows them; ``stopping()`` stops the gateway (``zsad down``, or :func:`stop_gateways`), after
    which the heartbeat says ``stopped`` with the final counts. Callable with a whole stack too."""
    for number in range(FILES):
        (folder / f"f{number}.jpg").write_bytes(image_bytes(number))
    wait_for(lambda: len(names(folder / "done")) == FILES, timeout_s=60, what="every file in done/")
    wait_for(lambda: _status(redis_server, camera).sent == FILES, timeout_s=30, what="the heartbeat's counts")
    running = _status(redis_server, camera)
    assert (running.state, running.kind, running.captured, running.failed) == ("running", "folder", FILES, 0)
    assert main(["status", "--json", "--config", str(config_path)]) == 0
    stopping()
    stopped = _status(redis_server, camera)
    assert (stopped.state, stopped.sent, stopped.spool_bytes) == ("stopped", FILES, 0)


def test_configured_folder_gateway_runs_reports_and_stops(
    noida_broker: NoidaBroker, redis_server: RedisServer, unique: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    camera = f"gw-{unique}"
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    folder = tmp_path / "hot"
    folder.mkdir()
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump({
        "kafka": kafka.model_dump(mode="json"),
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5}},
        "gateways": {camera: {"kind": "folder", "path": str(folder), "settle_s": 0.0, "rescan_s": 0.05,
                              "spool_dir": str(tmp_path / "spool")}},
    }))  # fmt: skip
    assert _status(redis_server, camera).state == "not reporting"
    processes = start_gateways(config_path, [camera], tmp_path)
    try:
        check_configured_folder_gateway_runs_and_reports(config_path, camera, folder, redis_server,
                                                         lambda: stop_gateways(processes))  # fmt: skip
    finally:
        stop_gateways(processes, timeout_s=10)
    assert processes[camera].returncode == 0, gateway_log(tmp_path, camera).read_text()[-2000:]
    listed = json.loads(capsys.readouterr().out)["gateways"]
    assert [(row["camera"], row["state"], row["sent"]) for row in listed] == [(camera, "running", FILES)]
    assert len(read_frames(kafka, FILES)) >= FILES
