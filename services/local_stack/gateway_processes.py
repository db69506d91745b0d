"""The configured camera gateways of ``zsad up``: one ``zsad gateway run`` process per ``gateways:`` entry.

Why processes of their own, as on a camera PC: a gateway that fails (a missing folder, a camera that hangs) must
not take the stack down, and the stack stops each one the way a service manager would, with SIGTERM, so that
frames already read are sent or spooled before it exits (:mod:`services.gateway.runner`).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from services.gateway.runner import STOP_TIMEOUT_S

log = logging.getLogger(__name__)

GATEWAY_MODULE = "services.cli.main"
# The gateway flushes for up to STOP_TIMEOUT_S; a little more lets it write its last heartbeat and exit.
GATEWAY_STOP_TIMEOUT_S = STOP_TIMEOUT_S + 10.0


def gateway_log(log_dir: Path, camera: str) -> Path:
    """Where the stack writes a gateway's output."""
    return log_dir / f"gateway-{camera}.log"


def start_gateways(config_path: Path, cameras: Iterable[str], log_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
    """Start ``zsad gateway run --camera CAM --config CONFIG`` for each camera, output appended to its log."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    log_dir.mkdir(parents=True, exist_ok=True)
    for camera in cameras:
        with open(gateway_log(log_dir, camera), "ab") as log_file:
            processes[camera] = subprocess.Popen(  # noqa: S603 - our own module, argv list
                [sys.executable, "-m", GATEWAY_MODULE, "gateway", "run", "--camera", camera,
                 "--config", str(config_path)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )  # fmt: skip
        log.info("gateway of camera %s started (pid %d)", camera, processes[camera].pid)
    return processes


def stop_gateways(processes: dict[str, subprocess.Popen[bytes]], timeout_s: float = GATEWAY_STOP_TIMEOUT_S) -> None:
    """SIGTERM every gateway, wait for them together, then kill any still running after ``timeout_s``."""
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for camera, process in processes.items():
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("gateway of camera %s did not stop within %.0f s; killing it", camera, timeout_s)
            process.kill()
            process.wait()
        log.info("gateway of camera %s stopped (exit code %s)", camera, process.returncode)
