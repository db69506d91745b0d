"""A video stream (RTSP, HTTP MJPEG) or a video file, read through OpenCV's FFmpeg backend and sampled at ``fps``.

Sampling: the frame that opens each ``1/fps`` interval of the stream's own clock (its presentation time, so a
camera sending 30 fps gives exactly every third frame at ``fps=10``, whatever the read speed); ``fps=None``
keeps every frame. A video file is read as fast as frames can be sent (a replay) and the source ends with it.

Reconnect: a live stream that fails to open or stops delivering is opened again after 0.5 s, doubling up to
``max_reconnect_s``; every reopening after a drop counts in ``zsad_gateway_source_reconnects_total``.

Frame identity: ``<camera>-<capture ms>-<sequence>``. The capture time is the wall clock when FFmpeg returned
the frame for a live stream (RTSP/MJPEG timestamps are relative to the session, not the epoch) and, for a file,
the moment it was opened plus the frame's position in it. A crash loses the frames in the sender's memory
(see :mod:`services.gateway.sender`); a stream cannot give them again.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from services.config import LimitsConfig
from services.gateway.encoding import FrameEncoding, frame_from_pixels
from services.gateway.frames import GatewayFrame, Submit
from services.gateway.metrics import GatewayMetrics
from services.gateway.part_identity import PartIdentity
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
OPEN_TIMEOUT_MS = 5_000
READ_TIMEOUT_MS = 5_000


class StreamSource:
    """Frames of one stream or video file, sampled and encoded (JPEG unless ``encoding`` says PNG)."""

    def __init__(
        self,
        camera: str,
        url: str,
        *,
        fps: float | None,
        encoding: FrameEncoding,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
        reconnect_s: float = 0.5,
        max_reconnect_s: float = 10.0,
    ):
        self.camera = camera
        self.url = url
        self.live = url.lower().startswith(LIVE_SCHEMES)
        self.fps = fps
        self.encoding = encoding if encoding.format != "keep" else FrameEncoding("jpeg", encoding.jpeg_quality,
                                                                                  encoding.max_side)  # fmt: skip
        self.limits = limits
        self.metrics = metrics
        self.reconnect_s, self.max_reconnect_s = reconnect_s, max_reconnect_s
        self._sequence = 0

    def run(self, submit: Submit, stop: threading.Event) -> None:
        """Read until ``stop`` is set or a video file ends, reopening a live stream after every drop."""
        wait_s = self.reconnect_s
        dropped = False
        while not stop.is_set():
            capture = self._open()
            if capture is None:
                if not self.live:
                    return
                stop.wait(wait_s)
                wait_s = min(wait_s * 2, self.max_reconnect_s)
                continue
            if dropped:
                self.metrics.reconnected()
            try:
                delivered = self._read(capture, submit, stop)
            finally:
                capture.release()
            if not self.live:
                return
            dropped = True
            if delivered:
                wait_s = self.reconnect_s
            log.warning("camera %s: stream %s dropped; reopening in %.1f s", self.camera, self.url, wait_s)
            stop.wait(wait_s)

    def _open(self) -> cv2.VideoCapture | None:
        if not self.live and not Path(self.url).is_file():
            log.error("camera %s: video file %s does not exist", self.camera, self.url)
            return None
        timeouts = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        capture = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, timeouts)
        if capture.isOpened():
            return capture
        capture.release()
        log.warning("camera %s: cannot open stream %s", self.camera, self.url)
        return None

    def _read(self, capture: cv2.VideoCapture, submit: Submit, stop: threading.Event) -> int:
        """Submit sampled frames until the stream ends or fails; how many were submitted."""
        opened_at = time.time()
        last_slot = -1
        submitted = 0
        while not stop.is_set():
            ok, bgr = capture.read()
            if not ok:
                return submitted
            position_s = max(0.0, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000)
            if self.fps is not None:
                slot = math.floor(position_s * self.fps + 1e-6)
                if slot <= last_slot:
                    continue
                last_slot = slot
            capture_ts = time.time() if self.live else opened_at + position_s
            self.metrics.captured()
            frame = self._frame(bgr, capture_ts)
            if frame is not None:
                submit(frame, None)
                submitted += 1
        return submitted

    def _frame(self, bgr: np.ndarray, capture_ts: float) -> GatewayFrame | None:
        self._sequence += 1
        frame_id = f"{self.camera}-{int(capture_ts * 1000)}-{self._sequence}"
        try:
            return frame_from_pixels(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), camera=self.camera, frame_id=frame_id,
                                     capture_ts=capture_ts, encoding=self.encoding, limits=self.limits,
                                     part=PartIdentity())  # fmt: skip
        except ZsadError as exc:
            self.metrics.failed(exc.reason)
            log.warning("camera %s: frame %s refused: %s", self.camera, frame_id, exc)
            return None
