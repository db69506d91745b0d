"""Running one source with its sender until SIGTERM, then flushing: the life of a gateway process.

Why a flush on SIGTERM: a service manager (systemd, ``zsad up``, Kubernetes) stops a gateway with SIGTERM and
waits; frames already read from a stream or camera exist only in memory, so they are sent (or spooled to disk
when the broker is away) before the process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Protocol

from services.gateway.folder_source import Submit
from services.gateway.sender import FrameSender

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


class Source(Protocol):
    """Anything that reads frames and submits them until ``stop`` is set (or it has no more)."""

    def run(self, submit: Submit, stop: threading.Event) -> None:
        """Read and submit frames."""


def run_gateway(source: Source, sender: FrameSender, stop: threading.Event) -> None:
    """Run ``source`` into ``sender`` until ``stop`` is set or the source ends, then send what is left."""
    sender.start()
    try:
        source.run(sender.submit, stop)
    finally:
        if not sender.stop(STOP_TIMEOUT_S):
            log.error("camera %s: frames still unsent after %.0f s; exiting anyway", sender.metrics.camera,
                      STOP_TIMEOUT_S)  # fmt: skip


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (call from the main thread)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
