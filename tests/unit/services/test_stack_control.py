"""The local stack's typed operations on stack directories left in known states, with real processes.

Starting a whole stack is the integration tests' job (tests/integration/test_local_stack.py); here are the
cases that need no Ray: nothing started, a stack that died, and the services it left behind.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.config import ZsadConfig
from services.local_stack import stack_process
from services.local_stack.control import REQUESTED_CONFIG_NAME, StoppedStack, running_stack, stop_stack
from services.local_stack.stack_process import CONFIG_NAME, STATE_NAME, LocalStack, StackState, process_alive


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_nothing_started_is_neither_running_nor_stoppable(tmp_path: Path) -> None:
    assert running_stack(tmp_path) is None
    assert stop_stack(tmp_path) is None


def test_a_dead_stack_is_not_running_and_stopping_it_cleans_up_what_it_left(tmp_path: Path) -> None:
    # A process whose command line names redis-server, as the orphaned Redis of a crashed stack would.
    orphan = subprocess.Popen(["bash", "-c", "exec -a redis-server-left-behind sleep 60"])
    try:
        time.sleep(0.2)  # until exec has replaced bash's command line
        StackState(_dead_pid(), "ready", time.time(), str(tmp_path / CONFIG_NAME),
                   children={"redis": orphan.pid, "noida": _dead_pid()}).write(tmp_path)  # fmt: skip
        for name in (CONFIG_NAME, REQUESTED_CONFIG_NAME):
            (tmp_path / name).write_text("redis: {}\n")

        assert running_stack(tmp_path) is None
        assert stop_stack(tmp_path, timeout_s=5) == StoppedStack(pid=None, orphans=["redis"])
        assert orphan.wait(timeout=10) == -15  # SIGTERM
        assert not any((tmp_path / name).exists() for name in (STATE_NAME, CONFIG_NAME, REQUESTED_CONFIG_NAME))
    finally:
        if process_alive(orphan.pid):
            orphan.kill()
            orphan.wait()


def test_a_failed_start_stays_visible_with_its_error(tmp_path: Path) -> None:
    StackState(_dead_pid(), "failed", time.time(), "", error="RuntimeError: no broker").write(tmp_path)
    state = running_stack(tmp_path)
    assert state is not None and state.status == "failed" and state.error == "RuntimeError: no broker"


def test_prometheus_is_on_disk_as_soon_as_it_runs_so_a_stack_killed_during_start_leaves_no_orphan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class _Started:
        pid, url = 4242, "http://127.0.0.1:9"

        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def start(self) -> _Started:
            return self

    monkeypatch.setattr(stack_process, "PrometheusServer", _Started)
    camera = {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
    stack = LocalStack(ZsadConfig(cameras={"cam1": camera}), tmp_path)
    stack.state.write(tmp_path)
    stack._start_prometheus(metrics_port=1)  # the next step, Serve's start, is where a slow replica is killed

    state = StackState.read(tmp_path)
    assert state is not None and state.children["prometheus"] == 4242
