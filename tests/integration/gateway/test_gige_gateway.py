"""``zsad gateway gige`` against Aravis's own GigE Vision camera simulator on loopback (a real GVCP/GVSP exchange):
N software triggers give N records; the simulator killed and restarted, the gateway reconnects and goes on.

Skipped where Debian's aravis-tools, gir1.2-aravis-0.8 or python3-gi are missing (scripts/bootstrap.sh installs
them). The simulator listens on the fixed GVCP port 3956 of 127.0.0.1, so one runs at a time (the tests run
under the integration lock)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from gateway_helpers import gateway_kafka, header, read_frames, wait_for

from services.config import ConfigError
from services.gateway.gige_source import H_GIGE_FRAME_ID, load_aravis
from services.local_stack.service_processes import NoidaBroker, free_port
from services.records import H_FRAME_ID

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]
SIMULATOR = "arv-fake-gv-camera-0.8"


def _aravis_missing() -> str | None:
    if shutil.which(SIMULATOR) is None:
        return f"{SIMULATOR} is not installed (Debian's aravis-tools; scripts/bootstrap.sh)"
    try:
        load_aravis()
    except ConfigError as exc:
        return str(exc)
    return None


@pytest.fixture
def simulator() -> Iterator[subprocess.Popen[bytes]]:
    reason = _aravis_missing()
    if reason:
        pytest.skip(reason)
    process = subprocess.Popen([SIMULATOR, "-i", "127.0.0.1", "-s", "ZSAD1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    yield process
    process.terminate()
    process.wait(10)


def _gateway(config: Path, spool: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "services.cli.main", "gateway", "gige", "--config", str(config), "--camera",
            "cam-gige", "--device", "127.0.0.1", "--spool", str(spool), *options]  # fmt: skip


def _environment() -> dict[str, str]:
    """Ours first on the path, then what the tests run with (where Debian's gi may have been added)."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def _config(noida_broker: NoidaBroker, unique: str, tmp_path: Path) -> tuple[Path, object]:
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    config = tmp_path / "config.yaml"
    camera = {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
    config.write_text(yaml.safe_dump({"kafka": kafka.model_dump(mode="json"), "cameras": {"cam-gige": camera}}))
    return config, kafka


def test_n_software_triggers_give_n_records(simulator: subprocess.Popen[bytes], noida_broker: NoidaBroker,
                                            unique: str, tmp_path: Path) -> None:  # fmt: skip
    config, kafka = _config(noida_broker, unique, tmp_path)
    done = subprocess.run(_gateway(config, tmp_path / "spool", "--trigger", "software", "--fps", "20", "--count", "7"),
                          cwd=ROOT, env=_environment(),
                          capture_output=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    records = read_frames(kafka, 7)  # type: ignore[arg-type]
    assert len(records) == 7
    # The camera's own frame ids travel with the frames (they wrap at 65535, so only distinctness is checked).
    assert len({header(record, H_GIGE_FRAME_ID) for record in records}) == 7
    assert len({header(record, H_FRAME_ID) for record in records}) == 7


def test_the_gateway_reconnects_after_the_simulator_restarts(simulator: subprocess.Popen[bytes],
                                                             noida_broker: NoidaBroker, unique: str,
                                                             tmp_path: Path) -> None:  # fmt: skip
    config, kafka = _config(noida_broker, unique, tmp_path)
    port = free_port()
    gateway = subprocess.Popen(
        _gateway(config, tmp_path / "spool", "--trigger", "software", "--fps", "10", "--metrics-port", str(port)),
        cwd=ROOT, env=_environment(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip

    def metric(name: str) -> float:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            return 0.0
        lines = [line for line in text.splitlines() if line.startswith(name + "{")]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    try:
        wait_for(lambda: metric("zsad_gateway_frames_sent_total") >= 3, timeout_s=60, what="frames before the loss")
        simulator.send_signal(signal.SIGKILL)
        simulator.wait(10)
        sent_before = metric("zsad_gateway_frames_sent_total")
        restarted = subprocess.Popen([SIMULATOR, "-i", "127.0.0.1", "-s", "ZSAD1"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_for(lambda: metric("zsad_gateway_frames_sent_total") >= sent_before + 3, timeout_s=60,
                     what="frames after the simulator restarted")  # fmt: skip
            assert metric("zsad_gateway_source_reconnects_total") >= 1
        finally:
            gateway.send_signal(signal.SIGTERM)
            _, errors = gateway.communicate(timeout=30)
            restarted.terminate()
            restarted.wait(10)
    finally:
        if gateway.poll() is None:
            gateway.kill()
    assert gateway.returncode == 0, errors.decode()[-2000:]
    assert len(read_frames(kafka, int(sent_before) + 3)) >= sent_before + 3  # type: ignore[arg-type]
