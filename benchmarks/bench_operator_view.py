"""Pipeline frames/s with the operator view open and following two cameras, against the same run without it.

Usage: python -m benchmarks.bench_operator_view [--backbone ViT-B-16] [--image-size 224] [--frames 48]

One application (two CLIP-AD cameras on one shared backbone, one replica, noida-db, redis-server) runs three
phases of ``--frames`` frames per camera, produced at once: without the view, with it, without it again (the
mean of the two is the reference, so a machine that got busier shows). "With the view" is what an open live
wall per camera costs the server: one server-sent-event stream per camera, and per repaint (at most one a
second, as the page does) the thumbnails of the frames that arrived, plus the overview every 5 seconds. The rate
counts results written to Redis from the phase's first to its last. Random CLIP weights: timing does not depend
on the weight values. Issue 14's target: within 5 %.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import platform
import tempfile
import threading
import time
import urllib.request

import numpy as np

from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.frame_path.result_store import ResultStore
from services.local_stack.service_processes import NoidaBroker, RedisServer, free_port
from zsad_core.imageio import encode_jpeg

CAMERAS = ("bench-a", "bench-b")
TOKEN = "bench-viewer-token-" + "x" * 8


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


class PageLoad:
    """What open live walls of both cameras and an overview ask of the view, in threads, until stopped."""

    def __init__(self, port: int, prefix: str) -> None:
        self.port, self.prefix = port, prefix
        self.base = f"http://127.0.0.1:{port}{prefix}"
        self.stop = threading.Event()
        self.events = 0
        self.thumbnails = 0
        self.threads = [threading.Thread(target=self._follow, args=(c,), daemon=True) for c in CAMERAS]
        self.threads.append(threading.Thread(target=self._overview, daemon=True))

    def __enter__(self) -> PageLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()

    def _follow(self, camera: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.request("GET", f"{self.prefix}/camera/{camera}/events", headers={"Authorization": f"Bearer {TOKEN}"})
        response = connection.getresponse()
        pending: list[str] = []
        last_paint = time.monotonic()
        while not self.stop.is_set():
            line = response.fp.readline().decode()
            if line.startswith("data: "):
                pending.append(json.loads(line[6:])["frame_id"])
                self.events += 1
            if pending and time.monotonic() - last_paint >= 1.0:
                for frame_id in pending[-12:]:
                    _get(f"{self.base}/frame/{camera}/{frame_id}/heat.png?width=192")
                    self.thumbnails += 1
                pending.clear()
                last_paint = time.monotonic()
        connection.close()

    def _overview(self) -> None:
        while not self.stop.wait(5.0):
            _get(f"{self.base}/")


def _frames(count: int, side: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode_jpeg(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), quality=90) for _ in range(count)]


def _phase(config: ZsadConfig, store: ResultStore, frames: int, phase: int) -> float:
    """Produce ``frames`` per camera and return the rate of their results, first to last write."""
    before = sum(store.count_results(camera) for camera in CAMERAS)
    with FrameProducer.from_config(config) as producer:
        for camera in CAMERAS:
            for index, data in enumerate(_frames(frames, 256, phase * 7 + len(camera))):
                producer.send_frame(camera, data, frame_id=f"p{phase}-{index}")
    target = before + frames * len(CAMERAS)
    while sum(store.count_results(camera) for camera in CAMERAS) < target:
        time.sleep(0.1)
    written = [float(e.write_ts) for camera in CAMERAS for e in store.recent(camera, frames)]
    return len(written) / (max(written) - min(written))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=48, help="frames per camera per phase")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    from services.frame_path.serve_app import app_from_config

    workdir = tempfile.mkdtemp(prefix="zsad-bench-view-")
    with RedisServer(data_dir=f"{workdir}/redis") as redis_server, NoidaBroker(data_dir=f"{workdir}/noida") as broker:
        camera = {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": args.image_size}
        config = ZsadConfig(
            kafka={"bootstrap_servers": [broker.bootstrap_servers], "partitions": 2},
            redis={"url": redis_server.url, "password": redis_server.password},
            cameras={name: camera for name in CAMERAS},
            serving={"backbone": args.backbone, "max_batch_size": 8, "torch_threads": args.threads, "num_cpus": 1},
            ingest={"num_actors": 1, "max_in_flight": 32},
            view={"viewer_token": TOKEN, "operator_token": TOKEN + "-op"},
        )  # fmt: skip
        ensure_topics(config.kafka)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            port = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(app_from_config(config), name="bench", route_prefix="/bench", blocking=False)
            store = ResultStore.from_config(config)
            _phase(config, store, 8, 0)  # warm-up: app start, first batches
            without_before = _phase(config, store, args.frames, 1)
            with PageLoad(port, "/bench") as page:
                with_view = _phase(config, store, args.frames, 2)
            without_after = _phase(config, store, args.frames, 3)
            serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()
    reference = (without_before + without_after) / 2
    print(f"# {dt.date.today()} {platform.machine()} {os.cpu_count()} cores; clip-ad x 2 cameras on {args.backbone} "
          f"@ {args.image_size}, {args.frames} frames per camera per phase, {args.threads} torch threads")  # fmt: skip
    print("| phase | frames/s |\n|---|---|")
    print(f"| without the view, before / after | {without_before:.2f} / {without_after:.2f} |")
    print(f"| with two live walls and the overview open | {with_view:.2f} |")
    print(f"| **with / without** | **{with_view / reference:.3f}** (target >= 0.95) |")
    print(f"(the page received {page.events} events and loaded {page.thumbnails} thumbnails)")


if __name__ == "__main__":
    main()
