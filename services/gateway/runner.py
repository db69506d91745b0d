"""Running one source with its sender until SIGTERM, then flushing: the life of a gateway process.

Why a flush on SIGTERM: a service manager (systemd, ``zsad up``, Kubernetes) stops a gateway with SIGTERM and
waits; frames already read from a stream or camera exist only in memory, so they are sent (or spooled to disk
when the broker is away) before the process exits.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Protocol

from services.config import ConfigError, GatewayConfig, ZsadConfig
from services.gateway.encoding import FrameEncoding
from services.gateway.folder_source import FolderSettings, FolderSource
from services.gateway.frames import Submit
from services.gateway.gige_source import GigeSource
from services.gateway.heartbeat import GatewayHeartbeat
from services.gateway.metrics import GatewayMetrics, serve_metrics
from services.gateway.part_identity import compile_part_pattern
from services.gateway.sender import FrameSender
from services.gateway.spool import DiskSpool
from services.gateway.stream_source import StreamSource
from services.state_home import state_home

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0


class Source(Protocol):
    """Anything that reads frames and submits them until ``stop`` is set (or it has no more)."""

    def run(self, submit: Submit, stop: threading.Event) -> None:
        """Read and submit frames."""


def run_gateway(
    source: Source, sender: FrameSender, stop: threading.Event, heartbeat: GatewayHeartbeat | None = None
) -> None:
    """Run ``source`` into ``sender`` until ``stop`` is set or the source ends, then send what is left.

    ``heartbeat`` reports ``running`` meanwhile and ``stopped`` with the final counts once the sender is done.
    """
    if heartbeat is not None:
        heartbeat.start()
    sender.start()
    try:
        source.run(sender.submit, stop)
    finally:
        if not sender.stop(STOP_TIMEOUT_S):
            log.error("camera %s: frames still unsent after %.0f s; exiting anyway", sender.metrics.camera,
                      STOP_TIMEOUT_S)  # fmt: skip
        if heartbeat is not None:
            heartbeat.stop()


def stop_on_signals(stop: threading.Event) -> None:
    """Set ``stop`` on SIGTERM and SIGINT (call from the main thread)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def build_gateway(config: ZsadConfig, camera: str, entry: GatewayConfig) -> tuple[Source, FrameSender]:
    """The source and sender of ``camera``'s gateway ``entry``, its metrics served if asked; run them with
    :func:`run_gateway`.

    Raises:
        ConfigError: the source cannot be opened as configured (a missing folder, a bad pattern).
    """
    metrics = GatewayMetrics(camera)
    source = _source(config, camera, entry, metrics)
    spool = DiskSpool(entry.spool_dir or state_home() / "gateway" / camera / "spool", entry.spool_max_bytes)
    sender = FrameSender(config.kafka, spool, metrics, max_frame_bytes=config.limits.max_bytes)
    if entry.metrics_port is not None:
        serve_metrics(metrics, entry.metrics_port, entry.metrics_host)
    return source, sender


def _source(config: ZsadConfig, camera: str, entry: GatewayConfig, metrics: GatewayMetrics) -> Source:
    encoding = FrameEncoding(format=entry.encode, jpeg_quality=entry.jpeg_quality, max_side=entry.max_side)
    if entry.kind == "folder":
        folder = Path(entry.path or "")
        if not folder.is_dir():
            raise ConfigError(f"gateway of camera {camera}: folder {folder} does not exist")
        settings = FolderSettings(
            path=folder,
            done=None if entry.delete_sent else Path(entry.done or folder / "done"),
            failed=Path(entry.failed or folder / "failed"),
            pattern=entry.pattern,
            settle_s=entry.settle_s,
            rescan_s=entry.rescan_s,
            part_pattern=compile_part_pattern(entry.part_pattern) if entry.part_pattern else None,
        )
        return FolderSource(camera, settings, encoding=encoding, limits=config.limits, metrics=metrics)
    if entry.kind == "stream":
        return StreamSource(camera, entry.url or "", fps=entry.fps, encoding=encoding, limits=config.limits,
                            metrics=metrics)  # fmt: skip
    return GigeSource(camera, entry.device or "", trigger=entry.trigger, fps=entry.fps, exposure_us=entry.exposure_us,
                      count=entry.count, encoding=encoding, limits=config.limits, metrics=metrics)  # fmt: skip
