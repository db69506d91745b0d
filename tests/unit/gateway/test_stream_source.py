"""The stream source through OpenCV's FFmpeg backend: a video file sampled at --fps, and an HTTP MJPEG server
restarted mid-stream (the source reconnects and frames resume). Frames are collected instead of sent."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.config import LimitsConfig
from services.gateway.encoding import FrameEncoding
from services.gateway.frames import GatewayFrame
from services.gateway.metrics import GatewayMetrics
from services.gateway.stream_source import StreamSource
from services.local_stack.service_processes import free_port
from services.records import FrameHeaders
from zsad_core.imageio import decode_image, encode_jpeg


class Collected:
    def __init__(self) -> None:
        self.frames: list[GatewayFrame] = []

    def __call__(self, frame: GatewayFrame, on_outcome: object) -> None:
        self.frames.append(frame)


def _wait_for(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _source(url: str, fps: float | None, metrics: GatewayMetrics, **options: object) -> StreamSource:
    return StreamSource("cam-s", url, fps=fps, encoding=FrameEncoding(), limits=LimitsConfig(), metrics=metrics,
                        **options)  # type: ignore[arg-type]  # fmt: skip


def test_a_30_fps_video_file_sampled_at_10_fps_gives_every_third_frame(tmp_path: Path) -> None:
    video = tmp_path / "replay.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for number in range(60):  # two seconds; the frame number is written into the grey level
        writer.write(np.full((48, 64, 3), number * 4, dtype=np.uint8))
    writer.release()
    collected = Collected()
    _source(str(video), 10.0, GatewayMetrics("cam-s")).run(collected, threading.Event())  # ends with the file
    assert len(collected.frames) == 20
    levels = [int(decode_image(frame.payload).mean().round()) for frame in collected.frames]
    assert levels == pytest.approx([number * 4 for number in range(0, 60, 3)], abs=3)
    assert len({frame.frame_id for frame in collected.frames}) == 20
    for frame in collected.frames:  # every frame passes the record contract
        FrameHeaders.create(frame.camera, frame.frame_id, frame.capture_ts, frame.content_type)
    times = [frame.capture_ts for frame in collected.frames]
    assert np.allclose(np.diff(times), 0.1, atol=0.01)  # the file's clock, not the read speed


class _MjpegServer:
    """An HTTP server sending a multipart/x-mixed-replace JPEG stream at about 25 fps, like an IP camera."""

    def __init__(self, port: int):
        image = encode_jpeg(np.full((48, 64, 3), 120, dtype=np.uint8))

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not server.stopping:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(image)}\r\n\r\n".encode() + image + b"\r\n")
                        time.sleep(0.04)
                except OSError:
                    return

            def log_message(self, *args: object) -> None:
                return

        server = self
        self.stopping = False
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        self.httpd.shutdown()
        self.httpd.server_close()


def test_an_mjpeg_stream_resumes_after_the_server_restarts() -> None:
    mjpeg_port = free_port()
    server = _MjpegServer(mjpeg_port)
    metrics, collected, stop = GatewayMetrics("cam-s"), Collected(), threading.Event()
    source = _source(f"http://127.0.0.1:{mjpeg_port}/stream.mjpg", None, metrics, reconnect_s=0.2,
                     max_reconnect_s=0.5)  # fmt: skip
    reader = threading.Thread(target=source.run, args=(collected, stop), daemon=True)
    reader.start()
    try:
        _wait_for(lambda: len(collected.frames) >= 5)
        server.stop()
        time.sleep(1.0)  # down for a while: opening fails, the source keeps trying
        before = len(collected.frames)
        server = _MjpegServer(mjpeg_port)
        _wait_for(lambda: len(collected.frames) >= before + 5)
    finally:
        stop.set()
        server.stop()
        reader.join(15)
    assert not reader.is_alive()
    assert metrics.value("zsad_gateway_source_reconnects_total") >= 1
    assert len({frame.frame_id for frame in collected.frames}) == len(collected.frames)
