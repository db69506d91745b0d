"""``zsad up`` / ``produce`` / ``status`` / ``results`` / ``down``: the README's main command, on a tiny model.

The stack runs in its own process with its own Ray, Redis and broker, as for a user; its state home
(``$ZSAD_HOME``) is a temporary directory, the commands after ``up`` run from another directory (they find the
stack through the state home), and the test checks that ``down`` leaves nothing running.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from services.cli.main import main
from services.local_stack.stack_process import StackState, process_alive

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


@pytest.mark.takes_long(
    reason="a whole `zsad up` stack (its own Ray, Redis, broker and Serve application)"
    " started and stopped"
)
def test_up_produce_status_results_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    stack = tmp_path / "home" / "stack"
    config = {
        "cameras": {"line1": {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5, "image_size": 64}},
        "serving": {"backbone": "zsad-tiny-vit", "torch_threads": 1},
        "ingest": {"num_actors": 1},
        "kafka": {"partitions": 1},
    }
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    assert main(["up", "--config", "tiny.yaml"]) == 0
    state = StackState.read(stack)
    try:
        assert state is not None and state.status == "ready"
        assert ((stack / "config.yaml").stat().st_mode & 0o777) == 0o600  # it holds the Redis password
        assert main(["up"]) == 0 and "already running" in capsys.readouterr().out  # idempotent
        (tmp_path / "elsewhere").mkdir()
        monkeypatch.chdir(tmp_path / "elsewhere")

        assert main(["produce", "--camera", "line1", "--synthetic", "--count", "12", "--size", "64"]) == 0
        deadline = time.monotonic() + 120
        while True:
            capsys.readouterr()
            assert main(["status", "--json"]) == 0
            status = json.loads(capsys.readouterr().out)
            if status["cameras"][0]["frames"] >= 12:
                break
            assert time.monotonic() < deadline, f"12 results did not arrive: {status}"
            time.sleep(1)
        assert status["ingest"]["actors"][0]["counts"]["stored"] == 12
        assert main(["results", "--camera", "line1", "--json"]) == 0
        assert len(json.loads(capsys.readouterr().out)) == 12
        # The pipeline's metrics reach Ray's Prometheus endpoint (what the dashboard and Grafana read).
        deadline = time.monotonic() + 60
        while 'ray_zsad_frames_processed_total{' not in (text := _get(state.metrics_url)):
            assert time.monotonic() < deadline, "the zsad metrics were not exported within 60 s"
            time.sleep(2)
        processed = [line for line in text.splitlines() if line.startswith("ray_zsad_frames_processed_total{")]
        assert any('camera="line1"' in line and line.rsplit(" ", 1)[1] in ("12", "12.0") for line in processed)
    finally:
        assert main(["down"]) == 0
    assert not process_alive(state.pid)
    assert not any(process_alive(pid) for pid in state.children.values())
    assert not (stack / "state.json").exists() and not (stack / "config.yaml").exists()
