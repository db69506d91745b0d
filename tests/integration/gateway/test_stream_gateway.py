"""The stream gateway on the real broker: ``zsad gateway stream`` on a video file as a process (sampled frames on
the topic, exit 0 at the file's end), and an RTSP server killed and restarted mid-stream (frames resume)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from gateway_helpers import gateway_kafka, header, read_frames, running_gateway, wait_for

from services.config import LimitsConfig
from services.gateway.encoding import FrameEncoding
from services.gateway.metrics import GatewayMetrics
from services.gateway.stream_source import StreamSource
from services.local_stack.service_processes import NoidaBroker, free_port
from services.records import H_CAPTURE_TS, H_CONTENT_TYPE, H_FRAME_ID

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def test_a_video_file_replayed_at_10_fps_reaches_the_topic(noida_broker: NoidaBroker, unique: str,
                                                           tmp_path: Path) -> None:  # fmt: skip
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    config = tmp_path / "config.yaml"
    camera = {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
    config.write_text(yaml.safe_dump({"kafka": kafka.model_dump(mode="json"), "cameras": {"cam-video": camera}}))
    video = tmp_path / "line.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for number in range(30):
        writer.write(np.full((48, 64, 3), number * 8, dtype=np.uint8))
    writer.release()
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "gateway", "stream", "--config", str(config), "--camera",
         "cam-video", "--url", str(video), "--fps", "10", "--spool", str(tmp_path / "spool")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    records = read_frames(kafka, 10)
    assert len(records) == 10
    assert {header(record, H_CONTENT_TYPE) for record in records} == {"image/jpeg"}
    assert len({header(record, H_FRAME_ID) for record in records}) == 10
    times = [float(header(record, H_CAPTURE_TS) or 0) for record in records]
    assert times == sorted(times)


def _rtsp_server(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, str(Path(__file__).with_name("rtsp_test_server.py")), str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
    return server


def test_an_rtsp_stream_resumes_after_its_server_restarts(noida_broker: NoidaBroker, unique: str,
                                                          tmp_path: Path) -> None:  # fmt: skip
    probe = subprocess.run([sys.executable, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
                           capture_output=True, check=False)  # fmt: skip
    if probe.returncode:
        pytest.skip("GStreamer's RTSP server is not installed (Debian's gir1.2-gst-rtsp-server-1.0, python3-gi)")
    kafka = gateway_kafka(noida_broker.bootstrap_servers, unique)
    port = free_port()
    metrics = GatewayMetrics("cam-rtsp")
    source = StreamSource("cam-rtsp", f"rtsp://127.0.0.1:{port}/cam", fps=5.0, encoding=FrameEncoding(),
                          limits=LimitsConfig(), metrics=metrics, reconnect_s=0.2, max_reconnect_s=0.5)  # fmt: skip
    server = _rtsp_server(port)
    try:
        with running_gateway(source, kafka, tmp_path / "spool", metrics):
            wait_for(lambda: metrics.value("zsad_gateway_frames_sent_total") >= 5, what="frames from the server")
            server.kill()
            server.wait(10)
            before = metrics.value("zsad_gateway_frames_sent_total")
            server = _rtsp_server(port)
            wait_for(lambda: metrics.value("zsad_gateway_frames_sent_total") >= before + 5, timeout_s=30,
                     what="frames after the server restarted")  # fmt: skip
    finally:
        server.kill()
        server.wait(10)
    assert metrics.value("zsad_gateway_source_reconnects_total") >= 1
    sent = int(metrics.value("zsad_gateway_frames_sent_total"))
    records = read_frames(kafka, sent)
    assert len({header(record, H_FRAME_ID) for record in records}) == sent
