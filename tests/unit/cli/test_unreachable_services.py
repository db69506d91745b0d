"""Every command that needs Redis says in one line that it cannot reach it, and where; no traceback.

"Redis stopped" is a closed port on 127.0.0.1: the connection is refused exactly as with a stopped server.
"""

from __future__ import annotations

import argparse
import socket

import kafka.errors
import pytest
import yaml

from services.cli.main import main
from services.cli.unreachable import describe_unreachable

COMMANDS = [
    ["status"],
    ["results", "--camera", "cam1"],
    ["show", "--camera", "cam1", "--frame", "f1", "--out", "x.png"],
    ["registry", "list"],
    ["registry", "show", "clip-ad", "v1"],
    ["registry", "audit"],
    ["promote", "clip-ad", "v1"],
    ["rollback", "clip-ad"],
    ["reference", "list", "--camera", "cam1"],
    ["reference", "show", "--camera", "cam1"],
    ["reference", "promote", "--camera", "cam1", "r1"],
    ["calibration", "list", "--camera", "cam1"],
    ["calibration", "show", "--camera", "cam1"],
    ["calibration", "rollback", "--camera", "cam1"],
    ["camera", "show", "--camera", "cam1"],
    ["camera", "set", "--camera", "cam1", "--threshold", "0.4"],
    ["camera", "pause", "--camera", "cam1"],
    ["camera", "resume", "--camera", "cam1"],
    ["schedule", "list"],
    ["schedule", "remove", "nightly"],
]


@pytest.fixture(scope="module")
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed when the socket is: nothing listens there


@pytest.fixture
def config(tmp_path, closed_port):
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({
        "redis": {"url": f"redis://127.0.0.1:{closed_port}/0"},
        "cameras": {"cam1": {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}},
    }))  # fmt: skip
    return path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_command_with_redis_stopped_prints_one_line_naming_redis_and_its_address(
    command, config, closed_port, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    code = main([*command, "--config", str(config)])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert f"Redis at 127.0.0.1:{closed_port}" in err and str(config) in err


def test_broker_timeouts_name_the_configured_brokers(config):
    args = argparse.Namespace(config=str(config))
    message = describe_unreachable(kafka.errors.KafkaTimeoutError("Unable to bootstrap"), args)
    assert message is not None and message.startswith("cannot reach the Kafka brokers 127.0.0.1:9092")
    assert describe_unreachable(ConnectionError("no cluster"), argparse.Namespace(address="10.0.0.1:6379")) == (
        "cannot connect to Ray at 10.0.0.1:6379: no cluster")
    assert describe_unreachable(ValueError("a bug"), args) is None
