"""``zsad ingest scale``, ``zsad status --address`` and ``zsad replay`` without a cluster: one line naming what is
missing, at once.

With a cluster they are run by the whole-stack test (tests/integration/test_local_stack.py).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
import yaml

from services.cli.main import main


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_without_a_local_stack_or_an_address_the_command_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path))
    assert main(["ingest", "scale", "2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "zsad: error (serve_app): no Ray cluster: start the local stack (zsad up) or give --address HOST:PORT")


@pytest.mark.parametrize("command", [
    ["ingest", "scale", "2"],
    ["replay", "--camera", "cam1", "--from-offset", "0"],
], ids=" ".join)  # fmt: skip
def test_an_address_where_nothing_listens_fails_in_seconds_not_minutes(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path))
    config = tmp_path / "zsad.yaml"  # Redis and the broker on closed ports too: Ray is asked first
    config.write_text(yaml.safe_dump({
        "redis": {"url": f"redis://127.0.0.1:{_closed_port()}/0"},
        "kafka": {"bootstrap_servers": [f"127.0.0.1:{_closed_port()}"]},
        "cameras": {"cam1": {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}},
    }))  # fmt: skip
    address = f"127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    assert main([*command, "--address", address, *(["--config", str(config)] if command[0] != "ingest" else [])]) == 3
    assert time.monotonic() - start < 10  # ray.init alone retries a dead address for minutes
    err = capsys.readouterr().err
    assert err.startswith(f"zsad: error (unreachable): cannot connect to Ray at {address}: nothing answers")
    assert len(err.strip().splitlines()) == 1


def test_scale_takes_a_positive_number_of_actors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "scale", "0"])
    assert exit_info.value.code == 2
    assert "must be >= 1, got 0" in capsys.readouterr().err
