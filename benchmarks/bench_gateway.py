"""The gateway alone, into a real local broker: frames/s, CPU seconds per frame and capture-to-ack latency.

Usage: python -m benchmarks.bench_gateway [--folder-files 12] [--stream-seconds 4] [--gige-seconds 5]

Three sources, each run in this process against one noida-db broker started here (its CPU is not counted):

* a hot folder of 5 MP PNGs (2592 x 1944, a smooth gradient with sensor-like noise), ``--settle-s 0``;
* a 1080p 30 fps MJPEG video file sampled to 10 fps (read as fast as it decodes, as a replay);
* Aravis's GigE Vision simulator on loopback, free running at its default rate (skipped without Aravis).

CPU seconds are this process's (``/proc``), so they include the source, the checks and encoding, and the Kafka
client. Capture-to-ack latency is measured per frame from its capture time to its acknowledgement callback;
for the folder the capture time is the file's modification time, so it includes waiting behind earlier files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from benchmarks.process_cpu import snapshot
from services.config import KafkaConfig, LimitsConfig
from services.frame_path.producer import ensure_topics
from services.gateway.encoding import FrameEncoding
from services.gateway.folder_source import FolderSettings, FolderSource
from services.gateway.frames import GatewayFrame, Outcome
from services.gateway.metrics import GatewayMetrics
from services.gateway.runner import Source
from services.gateway.sender import FrameSender
from services.gateway.spool import DiskSpool
from services.gateway.stream_source import StreamSource
from services.local_stack.service_processes import NoidaBroker


def _measure(name: str, source: Source, kafka: KafkaConfig, spool: Path, metrics: GatewayMetrics,
             until: Callable[[], bool], timeout_s: float) -> dict[str, float]:  # fmt: skip
    """Run ``source`` until ``until()`` holds (or it ends), then flush; frames/s, CPU s/frame, latency."""
    latencies: list[float] = []
    sender = FrameSender(kafka, DiskSpool(spool, 1 << 34), metrics, max_frame_bytes=LimitsConfig().max_bytes)

    def submit(frame: GatewayFrame, on_outcome: object = None) -> None:
        def acknowledged(done: GatewayFrame, outcome: Outcome) -> None:
            latencies.append(time.time() - done.capture_ts)
            if callable(on_outcome):
                on_outcome(done, outcome)

        sender.submit(frame, acknowledged)

    stop = threading.Event()
    cpu_before, started = sum(snapshot().values()), time.perf_counter()
    sender.start()
    reader = threading.Thread(target=source.run, args=(submit, stop), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while not until() and reader.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    reader.join(30)
    sender.stop(60)
    seconds, cpu = time.perf_counter() - started, sum(snapshot().values()) - cpu_before
    frames = len(latencies)
    return {"source": name, "frames": frames, "frames_per_s": round(frames / seconds, 2),
            "cpu_s_per_frame": round(cpu / max(frames, 1), 4),
            "latency_p50_s": round(float(np.percentile(latencies, 50)), 3) if latencies else float("nan"),
            "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else float("nan")}  # fmt: skip


def _sensor_png(seed: int) -> bytes:
    from zsad_core.imageio import encode_png

    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, 2592, dtype=np.float32)[None, :, None]
    image = np.clip(ramp + rng.normal(0, 6, (1944, 2592, 3)), 0, 255).astype(np.uint8)
    return encode_png(image)


def bench_folder(kafka: KafkaConfig, work: Path, files: int) -> dict[str, float]:
    folder = work / "hot"
    folder.mkdir()
    payload = _sensor_png(0)
    for number in range(files):  # one image under many names: frame ids come from names, not pixels
        (folder / f"part{number:03d}.png").write_bytes(payload)
    metrics = GatewayMetrics("bench-folder")
    source = FolderSource("bench-folder", FolderSettings(path=folder, done=folder / "done", failed=folder / "failed",
                                                         settle_s=0.0, rescan_s=0.05),
                          encoding=FrameEncoding(), limits=LimitsConfig(), metrics=metrics)  # fmt: skip
    result = _measure("folder, 5 MP PNG", source, kafka, work / "spool-folder", metrics,
                      lambda: len(list((folder / "done").iterdir())) + len(list((folder / "failed").iterdir()))
                      >= files, timeout_s=600)  # fmt: skip
    result["mb_per_frame"] = round(len(payload) / 1e6, 1)
    return result


def bench_stream(kafka: KafkaConfig, work: Path, seconds: int) -> dict[str, float]:
    video = work / "line-1080p.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (1920, 1080))
    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    for number in range(30 * seconds):
        writer.write(np.roll(base, number * 8, axis=1))
    writer.release()
    metrics = GatewayMetrics("bench-stream")
    source = StreamSource("bench-stream", str(video), fps=10.0, encoding=FrameEncoding("jpeg", 90),
                          limits=LimitsConfig(), metrics=metrics)  # fmt: skip
    return _measure("stream, 1080p 30 fps file sampled to 10 fps", source, kafka, work / "spool-stream", metrics,
                    lambda: False, timeout_s=600)  # fmt: skip


def bench_gige(kafka: KafkaConfig, work: Path, seconds: float) -> dict[str, float] | None:
    from services.config import ConfigError
    from services.gateway.gige_source import GigeSource

    if shutil.which("arv-fake-gv-camera-0.8") is None:
        return None
    simulator = subprocess.Popen(["arv-fake-gv-camera-0.8", "-i", "127.0.0.1", "-s", "BENCH"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        time.sleep(0.5)
        metrics = GatewayMetrics("bench-gige")
        try:
            source = GigeSource("bench-gige", "127.0.0.1", trigger="free", fps=None, exposure_us=None, count=None,
                                encoding=FrameEncoding("jpeg", 90), limits=LimitsConfig(), metrics=metrics)  # fmt: skip
        except ConfigError:
            return None
        end = time.monotonic() + seconds
        return _measure("GigE simulator, 512 x 512 Mono8, free running", source, kafka, work / "spool-gige",
                        metrics, lambda: time.monotonic() > end, timeout_s=seconds + 30)  # fmt: skip
    finally:
        simulator.terminate()
        simulator.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder-files", type=int, default=12)
    parser.add_argument("--stream-seconds", type=int, default=4)
    parser.add_argument("--gige-seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zsad-bench-gateway-") as scratch:
        work = Path(scratch)
        with NoidaBroker(data_dir=work / "broker") as broker:
            kafka = KafkaConfig(bootstrap_servers=[broker.bootstrap_servers], frames_topic="bench-gateway",
                                partitions=1)  # fmt: skip
            ensure_topics(kafka, max_message_bytes=LimitsConfig().max_bytes + (1 << 20))
            results = [bench_folder(kafka, work, args.folder_files), bench_stream(kafka, work, args.stream_seconds),
                       bench_gige(kafka, work, args.gige_seconds)]  # fmt: skip
    print(json.dumps([result for result in results if result is not None], indent=2))


if __name__ == "__main__":
    main()
