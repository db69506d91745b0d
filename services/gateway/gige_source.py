"""A GigE Vision camera through Aravis: buffered acquisition, free running or triggered, reopened after a loss.

Why Aravis: it speaks GVCP/GVSP (and USB3 Vision) for any GenICam camera, and Debian ships it with GObject
introspection (``gir1.2-aravis-0.8``), so no vendor SDK is needed. PyGObject is Debian's ``python3-gi``;
``scripts/bootstrap.sh`` makes that one package visible inside the project's virtual environment.

Acquisition: ``buffers`` buffers of the camera's payload size circulate between Aravis's receiving thread and
this loop, so a slow encode never makes Aravis allocate. Triggers: ``free`` runs the camera continuously (at
``fps`` when given); ``software`` sends a software trigger ``fps`` times a second; ``hardware`` waits for
``Line1``. Pixel formats Mono8, Mono16 (to 8 bits for JPEG, kept for PNG), RGB8 and the four Bayer 8-bit
layouts (demosaiced to RGB) are accepted; other formats are counted as failed frames.

Identity: frame ids are ``<camera>-<arrival ms>-<camera frame id>`` (GigE frame ids wrap at 65535 and restart
with the camera, the arrival time keeps them unique); the camera's own frame id and timestamp travel as the
headers ``zsad-gige-frame-id`` and ``zsad-gige-timestamp-ns``. The capture time is the host's arrival time: a
camera's clock counts from its power-on unless it runs PTP.

Loss: a camera that stops sending (cable pulled, power cut) is noticed after ``lost_after_s`` without a buffer
when frames are expected (free running or software trigger), or when Aravis reports the control channel
lost; it is then reopened after 0.5 s, doubling up to 10 s, and each reopening counts as a reconnect. Frames in
the sender's memory are lost by a crash, as for streams (:mod:`services.gateway.sender`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Literal

import cv2
import numpy as np

from services.config import ConfigError, LimitsConfig
from services.gateway.encoding import FrameEncoding, frame_from_pixels
from services.gateway.frames import GatewayFrame, Submit
from services.gateway.metrics import GatewayMetrics
from services.gateway.part_identity import PartIdentity
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)

Trigger = Literal["free", "software", "hardware"]
H_GIGE_FRAME_ID = "zsad-gige-frame-id"
H_GIGE_TIMESTAMP = "zsad-gige-timestamp-ns"
HARDWARE_LINE = "Line1"
_POP_TIMEOUT_US = 100_000
# GenICam names a Bayer layout by its first row, OpenCV by the second row's second and third pixels.
_BAYER_TO_OPENCV = {"BAYER_RG_8": cv2.COLOR_BayerBG2RGB, "BAYER_GR_8": cv2.COLOR_BayerGB2RGB,
                    "BAYER_BG_8": cv2.COLOR_BayerRG2RGB, "BAYER_GB_8": cv2.COLOR_BayerGR2RGB}  # fmt: skip


class CameraLostError(ZsadError, RuntimeError):
    """The camera stopped answering or sending; the source reopens it."""

    reason = "camera_lost"


class UnsupportedPixelFormatError(ZsadError, ValueError):
    """The camera sends a pixel format the gateway cannot convert; set Mono8, Mono16, RGB8 or Bayer*8."""

    reason = "pixel_format"


def load_aravis() -> Any:
    """The Aravis 0.8 module through GObject introspection.

    Raises:
        ConfigError: PyGObject or Aravis's typelib is missing; the message says what to install.
    """
    try:
        import gi

        gi.require_version("Aravis", "0.8")
        from gi.repository import Aravis
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"GigE Vision needs Debian's python3-gi and gir1.2-aravis-0.8 visible to this Python "
            f"(run scripts/bootstrap.sh): {exc}"
        ) from None
    return Aravis


class GigeSource:
    """Frames of one GigE Vision (or USB3 Vision) camera, by Aravis device id, serial or IP address."""

    def __init__(
        self,
        camera: str,
        device: str,
        *,
        trigger: Trigger,
        fps: float | None,
        exposure_us: float | None,
        count: int | None,
        encoding: FrameEncoding,
        limits: LimitsConfig,
        metrics: GatewayMetrics,
        buffers: int = 8,
        lost_after_s: float = 3.0,
        reconnect_s: float = 0.5,
        max_reconnect_s: float = 10.0,
    ):
        if trigger == "software" and fps is None:
            raise ConfigError(f"gateway of camera {camera}: a software trigger needs fps (triggers per second)")
        self.camera = camera
        self.device = device
        self.trigger = trigger
        self.fps = fps
        self.exposure_us = exposure_us
        self.count = count
        self.encoding = encoding if encoding.format != "keep" else FrameEncoding("jpeg", encoding.jpeg_quality,
                                                                                  encoding.max_side)  # fmt: skip
        self.limits = limits
        self.metrics = metrics
        self.buffers = buffers
        self.lost_after_s = lost_after_s
        self.reconnect_s, self.max_reconnect_s = reconnect_s, max_reconnect_s
        self._aravis = load_aravis()
        self._submitted = 0

    def run(self, submit: Submit, stop: threading.Event) -> None:
        """Acquire until ``stop`` is set or ``count`` frames were submitted, reopening the camera after a loss."""
        wait_s = self.reconnect_s
        opened_before = False
        while not stop.is_set() and not self._enough():
            try:
                device = self._aravis.Camera.new(self.device)
            except Exception as exc:  # noqa: BLE001 (GLib.Error from the introspected library)
                log.warning("camera %s: cannot open %s: %s", self.camera, self.device, exc)
                stop.wait(wait_s)
                wait_s = min(wait_s * 2, self.max_reconnect_s)
                continue
            if opened_before:
                self.metrics.reconnected()
            opened_before = True
            before = self._submitted
            try:
                self._acquire(device, submit, stop)
            except Exception as exc:  # noqa: BLE001 (GLib.Error or CameraLostError: reopen either way)
                log.warning("camera %s: lost %s: %s", self.camera, self.device, exc)
            if self._submitted > before:
                wait_s = self.reconnect_s
            if not stop.is_set() and not self._enough():
                stop.wait(wait_s)

    def _enough(self) -> bool:
        return self.count is not None and self._submitted >= self.count

    def _acquire(self, device: Any, submit: Submit, stop: threading.Event) -> None:
        lost = threading.Event()
        # A device kind without the signal raises TypeError; the buffer timeout still notices a loss then.
        with contextlib.suppress(TypeError):
            device.get_device().connect("control-lost", lambda *_: lost.set())
        self._configure(device)
        stream = device.create_stream(None, None)
        payload = device.get_payload()
        for _ in range(self.buffers):
            stream.push_buffer(self._aravis.Buffer.new_allocate(payload))
        device.start_acquisition()
        try:
            next_trigger = last_buffer = time.monotonic()
            while not stop.is_set() and not self._enough():
                now = time.monotonic()
                if self.trigger == "software" and now >= next_trigger:
                    device.software_trigger()
                    next_trigger = max(next_trigger + 1 / (self.fps or 1.0), now)
                buffer = stream.timeout_pop_buffer(_POP_TIMEOUT_US)
                if lost.is_set():
                    raise CameraLostError(f"control channel of {self.device} lost")
                if buffer is None:
                    if self.trigger != "hardware" and time.monotonic() - last_buffer > self.lost_after_s:
                        raise CameraLostError(f"no frame from {self.device} for {self.lost_after_s:.0f} s")
                    continue
                last_buffer = time.monotonic()
                try:
                    self._handle(buffer, submit)
                finally:
                    stream.push_buffer(buffer)
        finally:
            try:
                device.stop_acquisition()
            except Exception as exc:  # noqa: BLE001 (the camera may be gone already)
                log.debug("camera %s: stopping acquisition: %s", self.camera, exc)

    def _configure(self, device: Any) -> None:
        if self.exposure_us is not None:
            device.set_exposure_time(self.exposure_us)
        if self.trigger == "free":
            device.clear_triggers()
            device.set_acquisition_mode(self._aravis.AcquisitionMode.CONTINUOUS)
            if self.fps is not None:
                device.set_frame_rate(self.fps)
        else:
            device.set_trigger("Software" if self.trigger == "software" else HARDWARE_LINE)

    def _handle(self, buffer: Any, submit: Submit) -> None:
        if buffer.get_status() != self._aravis.BufferStatus.SUCCESS:
            self.metrics.failed("incomplete_buffer")
            return
        self.metrics.captured()
        frame = self._frame(buffer)
        if frame is not None:
            submit(frame, None)
            self._submitted += 1

    def _frame(self, buffer: Any) -> GatewayFrame | None:
        arrival_ns = buffer.get_system_timestamp() or time.time_ns()
        camera_frame_id = buffer.get_frame_id()
        frame_id = f"{self.camera}-{arrival_ns // 1_000_000}-{camera_frame_id}"
        try:
            pixels = self._pixels(buffer)
            frame = frame_from_pixels(pixels, camera=self.camera, frame_id=frame_id, capture_ts=arrival_ns / 1e9,
                                      encoding=self.encoding, limits=self.limits, part=PartIdentity())  # fmt: skip
        except ZsadError as exc:
            self.metrics.failed(exc.reason)
            log.warning("camera %s: frame %s refused: %s", self.camera, frame_id, exc)
            return None
        own = ((H_GIGE_FRAME_ID, str(camera_frame_id).encode()),
               (H_GIGE_TIMESTAMP, str(buffer.get_timestamp()).encode()))  # fmt: skip
        return GatewayFrame(frame.camera, frame.frame_id, frame.capture_ts, frame.payload, frame.content_type,
                            frame.extra_headers + own)  # fmt: skip

    def _pixels(self, buffer: Any) -> np.ndarray:
        """The buffer's image as RGB, or single-channel for Mono formats."""
        aravis = self._aravis
        width, height = buffer.get_image_width(), buffer.get_image_height()
        pixel_format = buffer.get_image_pixel_format()
        data = buffer.get_image_data() if hasattr(buffer, "get_image_data") else buffer.get_data()
        raw = np.frombuffer(data, dtype=np.uint8)
        if pixel_format == aravis.PIXEL_FORMAT_MONO_8:
            return raw[: width * height].reshape(height, width)
        if pixel_format == aravis.PIXEL_FORMAT_MONO_16:
            mono = np.frombuffer(data, dtype="<u2")[: width * height].reshape(height, width)
            return mono if self.encoding.format == "png" else (mono >> 8).astype(np.uint8)
        if pixel_format == aravis.PIXEL_FORMAT_RGB_8_PACKED:
            return raw[: width * height * 3].reshape(height, width, 3)
        for name, code in _BAYER_TO_OPENCV.items():
            if pixel_format == getattr(aravis, f"PIXEL_FORMAT_{name}"):
                return cv2.cvtColor(raw[: width * height].reshape(height, width), code)
        raise UnsupportedPixelFormatError(f"pixel format 0x{pixel_format:08x} of {self.device} is not supported")
