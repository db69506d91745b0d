"""Pipeline frames/s with the operator view open and following two cameras, against the same run without it.

Usage: python -m benchmarks.bench_operator_view [--backbone ViT-B-16] [--image-size 224] [--frames 48] [--rounds 3]

One application (two CLIP-AD cameras on one shared backbone, one replica, noida-db, redis-server) runs phases of
``--frames`` frames per camera, produced at once, alternating without the view and with it (``--rounds`` phases
with it, each between two without; a round's reference is the mean of its neighbours, so a machine that got
busier shows, and the median over rounds damps the noise of a shared machine). "With the view" is what an open
live wall per camera costs the server: one server-sent-event stream per camera, and per repaint (at most one a
second, as the page does) the thumbnails of the frames that arrived, plus the overview every 5 seconds. The rate
counts results written to Redis from the phase's first to its last. CPU seconds per process
(:mod:`benchmarks.process_cpu`) say what the view itself costs, independent of the noise. Random CLIP weights:
timing does not depend on the weight values. Issue 14's target: within 5 %.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import http.client
import json
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request

import numpy as np

from benchmarks.process_cpu import snapshot, spent
from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer, free_port
from services.stores.result_store import ResultStore
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
        self.reconnects = 0
        self.threads = [threading.Thread(target=self._follow, args=(c,), daemon=True) for c in CAMERAS]
        self.threads.append(threading.Thread(target=self._overview, daemon=True))

    def __enter__(self) -> PageLoad:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()

    def _follow(self, camera: str) -> None:
        """Read the camera's event stream as the browser does: reconnect with ``Last-Event-ID`` when it ends."""
        last_id = ""
        pending: list[str] = []
        last_paint = time.monotonic()
        while not self.stop.is_set():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            headers = {"Authorization": f"Bearer {TOKEN}", **({"Last-Event-ID": last_id} if last_id else {})}
            connection.request("GET", f"{self.prefix}/camera/{camera}/events", headers=headers)
            response = connection.getresponse()
            while not self.stop.is_set():
                line = response.readline().decode()
                if not line:
                    self.reconnects += 1  # the stream ended: a browser's EventSource reconnects
                    break
                if line.startswith("id: "):
                    last_id = line[4:].strip()
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


@dataclasses.dataclass(frozen=True)
class Phase:
    """One phase: the results' rate (first to last write), its wall seconds, CPU seconds per process."""

    rate: float
    seconds: float
    cpu: dict[str, float]

    def cores(self, *labels: str) -> float:
        """Cores the processes called ``labels`` used on average over the phase."""
        return sum(self.cpu.get(label, 0.0) for label in labels) / self.seconds


def _phase(config: ZsadConfig, store: ResultStore, frames: int, phase: int) -> Phase:
    """Produce ``frames`` per camera and measure how fast their results were written and what it cost."""
    cpu_before, started = snapshot(), time.monotonic()
    before = sum(store.count_results(camera) for camera in CAMERAS)
    with FrameProducer.from_config(config) as producer:
        for camera in CAMERAS:
            for index, data in enumerate(_frames(frames, 256, phase * 7 + len(camera))):
                producer.send_frame(camera, data, frame_id=f"p{phase}-{index}")
    target = before + frames * len(CAMERAS)
    while sum(store.count_results(camera) for camera in CAMERAS) < target:
        time.sleep(0.1)
    written = [float(e.write_ts) for camera in CAMERAS for e in store.recent(camera, frames)]
    rate = len(written) / (max(written) - min(written))
    return Phase(rate, time.monotonic() - started, spent(cpu_before, snapshot()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=48, help="frames per camera per phase")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="phases with the view, each between two without")
    args = parser.parse_args()
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    from services.serve_app import app_from_config

    workdir = tempfile.mkdtemp(prefix="zsad-bench-view-")
    pages: list[PageLoad] = []
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
            without = [_phase(config, store, args.frames, 1)]
            with_view = []
            for round_ in range(args.rounds):  # without, with, without, with, ..., without
                with PageLoad(port, "/bench") as page:
                    with_view.append(_phase(config, store, args.frames, 2 + 2 * round_))
                without.append(_phase(config, store, args.frames, 3 + 2 * round_))
                pages.append(page)
            serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()
    _report(args, without, with_view, pages)


VIEW_SIDE = ("ray::ServeReplica:bench:OperatorView", "ray::ProxyActor")


def _report(args: argparse.Namespace, without: list[Phase], with_view: list[Phase], pages: list[PageLoad]) -> None:
    ratios = [phase.rate / ((before.rate + after.rate) / 2)
              for phase, before, after in zip(with_view, without, without[1:], strict=False)]  # fmt: skip
    print(f"# {dt.date.today()} {platform.machine()} {os.cpu_count()} cores; clip-ad x 2 cameras on {args.backbone} "
          f"@ {args.image_size}, {args.frames} frames per camera per phase, {args.threads} torch threads, "
          f"{args.rounds} rounds")  # fmt: skip
    print("| round | frames/s without (before) | with the view | without (after) | with / without |")
    print("|---|---|---|---|---|")
    for index, (phase, ratio) in enumerate(zip(with_view, ratios, strict=True)):
        print(f"| {index + 1} | {without[index].rate:.2f} | {phase.rate:.2f} | {without[index + 1].rate:.2f} "
              f"| {ratio:.3f} |")  # fmt: skip
    print(f"| **median** | | | | **{statistics.median(ratios):.3f}** (target >= 0.95) |")
    view_with = statistics.mean(phase.cores(*VIEW_SIDE) for phase in with_view)
    view_without = statistics.mean(phase.cores(*VIEW_SIDE) for phase in without)
    client = statistics.mean(phase.cores("benchmark driver") for phase in with_view)
    print(f"\nThe view's side (its replica and Serve's proxy) used {view_with:.3f} cores with the page open and "
          f"{view_without:.3f} without; the benchmark's own page client {client:.3f} (a browser runs elsewhere).")
    print(f"The pages received {sum(p.events for p in pages)} events, loaded {sum(p.thumbnails for p in pages)} "
          f"thumbnails and reconnected {sum(p.reconnects for p in pages)} times.")  # fmt: skip
    print("\nCPU seconds per process in the first round:\n")
    print("| process | without | with the view |\n|---|---|---|")
    first_with, first_without = with_view[0].cpu, without[0].cpu
    for label in sorted(first_with, key=lambda label: -first_with[label]):
        row = [first_without.get(label, 0.0), first_with[label]]
        if max(row) >= 0.05:
            print(f"| {label} | {row[0]:.2f} | {row[1]:.2f} |")

if __name__ == "__main__":
    main()
