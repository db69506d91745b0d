"""Start, find and stop the local stack from another process: the operations behind ``zsad up``, ``down``,
``status`` and ``demo``, callable from any code (a notebook, a test, the demo) without building CLI arguments.

The stack itself runs in a process of its own (:mod:`.stack_process`, which says why); these functions spawn it,
read the state file it keeps in the stack directory, and signal it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.config import ZsadConfig
from services.local_stack.stack_process import (
    CONFIG_NAME,
    LOG_NAME,
    STATE_NAME,
    StackState,
    process_alive,
    runs,
    write_config,
)
from zsad_core.errors import ZsadError

START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 90.0
STACK_MODULE = "services.local_stack.stack_process"
# A configuration handed over as an object is written here for the stack process (mode 0600: it holds secrets).
REQUESTED_CONFIG_NAME = "requested-config.yaml"


class StackError(ZsadError, RuntimeError):
    """The local stack did not start, is not running, or did not stop."""

    reason = "stack"


@dataclass(frozen=True)
class StoppedStack:
    """What :func:`stop_stack` stopped.

    Attributes:
        pid: the stack process that was signalled, or None when it was already gone.
        orphans: services (``redis``, ``noida``, ``gateway CAM``) left behind by a stack process that died, stopped
            here.
    """

    pid: int | None
    orphans: list[str] = field(default_factory=list)


def running_stack(stack_dir: Path) -> StackState | None:
    """The local stack's state, or None when none was started in ``stack_dir`` or its process is gone.

    A failed start is returned (status ``failed``, with its error) so that callers can say why.
    """
    state = StackState.read(stack_dir)
    if state is not None and state.status != "failed" and not process_alive(state.pid):
        return None  # a stale file of a stack that died without cleaning up
    return state


def _stack_arguments(
    config: ZsadConfig | Path | None, external: bool, stack_dir: Path, rotate_redis_password: bool
) -> list[str]:
    arguments = ["--dir", str(stack_dir)] + (["--rotate-redis-password"] if rotate_redis_password else [])
    if isinstance(config, ZsadConfig):
        requested = stack_dir / REQUESTED_CONFIG_NAME
        write_config(config, requested)
        arguments += ["--config", str(requested)]
    elif config is not None:
        arguments += ["--config", str(config)]
    return arguments + (["--external"] if external else [])


def start_stack(
    config: ZsadConfig | Path | None = None,
    external: bool = False,
    *,
    stack_dir: Path,
    timeout_s: float = START_TIMEOUT_S,
    rotate_redis_password: bool = False,
) -> StackState:
    """Start the local stack in the background and wait until it is ready; a running one is returned as it is.

    Args:
        config: the configuration (an object, or a YAML file); None for the embedded defaults.
        external: use the configuration's Kafka and Redis instead of starting local ones (only Ray and the app).
        stack_dir: where the stack keeps its state, effective configuration and log.
        timeout_s: how long to wait for ``ready``; after that, whatever started is stopped.
        rotate_redis_password: replace the local Redis password kept in the stack directory (else it is reused,
            so results and clients survive a restart).

    Raises:
        StackError: a stack is still stopping, the start failed (with its error), or it was not ready in time.
    """
    state = running_stack(stack_dir)
    if state is not None and state.status == "stopping":
        raise StackError(f"the local stack (pid {state.pid}) is still stopping; start it again when it is gone")
    if state is not None and state.status in ("ready", "starting"):
        return _wait_until_ready(None, stack_dir, timeout_s)
    stack_dir.mkdir(parents=True, exist_ok=True)
    (stack_dir / STATE_NAME).unlink(missing_ok=True)
    arguments = _stack_arguments(config, external, stack_dir, rotate_redis_password)
    with open(stack_dir / LOG_NAME, "ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own module, argv list
            [sys.executable, "-m", STACK_MODULE, *arguments],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    return _wait_until_ready(process, stack_dir, timeout_s)


def _wait_until_ready(process: subprocess.Popen[bytes] | None, stack_dir: Path, timeout_s: float) -> StackState:
    log_path = stack_dir / LOG_NAME
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = running_stack(stack_dir)
        if state is not None and state.status == "ready":
            return state
        if state is not None and state.status == "failed":
            raise StackError(f"the local stack failed to start: {state.error} (log {log_path})")
        if process is not None and process.poll() is not None:
            raise StackError(f"the stack process exited with code {process.returncode}; log {log_path}")
        time.sleep(0.5)
    stop_stack(stack_dir)  # stop what did start
    raise StackError(f"the local stack was not ready after {timeout_s:.0f} s; log {log_path}")


def stop_stack(stack_dir: Path, timeout_s: float = STOP_TIMEOUT_S) -> StoppedStack | None:
    """SIGTERM the stack process, wait until it has stopped everything, and clean up after a dead one.

    Returns None when no stack was started in ``stack_dir``.

    Raises:
        StackError: the stack did not stop within ``timeout_s`` (it was then killed).
    """
    state = StackState.read(stack_dir)
    if state is None:
        return None
    pid = state.pid if runs(state.pid, STACK_MODULE) else None  # gone, or its PID now belongs to another program
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while pid is not None and process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = pid is not None and process_alive(pid)
    if killed:
        os.kill(pid, signal.SIGKILL)
    markers = {"redis": "redis-server", "noida": "noida-db"}
    orphans = []
    for name, child in state.children.items():  # left behind if the stack process died before stopping them
        if child and runs(child, markers.get(name, name)):
            os.kill(child, signal.SIGTERM)
            orphans.append(name)
    for camera, child in state.gateways.items():  # likewise its gateways, which then flush and exit
        if child and runs(child, "gateway"):
            os.kill(child, signal.SIGTERM)
            orphans.append(f"gateway {camera}")
    for name in (STATE_NAME, CONFIG_NAME, REQUESTED_CONFIG_NAME):  # the stack removes the first two unless it died
        (stack_dir / name).unlink(missing_ok=True)
    if killed:
        raise StackError(f"the stack did not stop within {timeout_s:.0f} s and was killed")
    return StoppedStack(pid, orphans)
