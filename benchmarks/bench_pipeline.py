"""Frames/s of the whole pipeline over frames/s of the bare method: same model, batch and machine, one run.

Usage: python -m benchmarks.bench_pipeline [--method clip-ad] [--backbone ViT-B-16] [--image-size 224]
                                            [--batch 8] [--frames 160] [--actors 1] [--threads 2]

1. Bare: ``method.predict`` on batches of decoded frames in this process (torch threads = ``--threads``).
2. Pipeline, run between two bare runs whose mean is the reference: the same frames through noida-db, the
   ingest actors, the Serve inspector (one replica with the same threads and batch size) into redis-server.
   The frames are produced before the app starts and the rate is measured from the first to the last
   result written, so start-up is not counted.
Random CLIP weights (no download): timing does not depend on the weight values. Issue 5's target: >= 0.85.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time

import numpy as np

from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer, free_port
from services.stores.result_store import ResultStore
from zsad_core.imageio import decode_image, encode_jpeg

CAMERA = "bench"


def _frames(count: int, side: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_jpeg(rng.integers(0, 256, (side, side, 3), dtype=np.uint8), quality=90) for _ in range(count)]


def _bare_rate(args: argparse.Namespace, frames: list[bytes]) -> float:
    import torch

    from zsad_core import load_method

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    method = load_method(args.method, backbone=args.backbone, pretrained=False, image_size=args.image_size,
                         **_options(args.method))  # fmt: skip
    images = [decode_image(data) for data in frames]
    method.predict(images[: args.batch])  # warm-up
    started = time.perf_counter()
    for start in range(0, len(images), args.batch):
        method.predict(images[start : start + args.batch])
    return len(images) / (time.perf_counter() - started)


def _options(method: str) -> dict[str, str]:
    return {"image_views": "none"} if method.startswith("anoclip") else {}


def _pipeline_rate(args: argparse.Namespace, frames: list[bytes]) -> tuple[float, float]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    from services.serve_app import app_from_config

    workdir = tempfile.mkdtemp(prefix="zsad-bench-")
    with RedisServer(data_dir=f"{workdir}/redis") as redis_server, NoidaBroker(data_dir=f"{workdir}/noida") as broker:
        config = ZsadConfig(
            kafka={"bootstrap_servers": [broker.bootstrap_servers], "partitions": args.actors},
            redis={"url": redis_server.url, "password": redis_server.password},
            cameras={CAMERA: {"method": args.method, "class_name": "object", "threshold": 0.5,
                              "image_size": args.image_size, "options": _options(args.method)}},
            serving={"backbone": args.backbone, "max_batch_size": args.batch, "batch_wait_timeout_s": 0.05,
                     "torch_threads": args.threads, "num_cpus": 1},
            ingest={"num_actors": args.actors, "max_in_flight": 4 * args.batch},
        )  # fmt: skip
        ensure_topics(config.kafka)
        with FrameProducer.from_config(config) as producer:
            for data in frames:
                producer.send_frame(CAMERA, data)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            store = ResultStore.from_config(config)
            started_app = time.monotonic()
            serve.run(app_from_config(config), name="bench", route_prefix="/bench", blocking=False)
            while store.count_results(CAMERA) == 0:
                time.sleep(0.05)
            first = time.monotonic()
            first_count = store.count_results(CAMERA)
            while (done := store.count_results(CAMERA)) < len(frames):
                time.sleep(0.05)
            last = time.monotonic()
            serve.delete("bench")
        finally:
            serve.shutdown()
            ray.shutdown()
    return (done - first_count) / (last - first), first - started_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="clip-ad")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--actors", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=256, help="side of the JPEG frames")
    args = parser.parse_args()
    frames = _frames(args.frames, args.side)
    bare_before = _bare_rate(args, frames)
    pipeline, cold_start = _pipeline_rate(args, frames)
    bare_after = _bare_rate(args, frames)  # a second bare run exposes a machine that got busier meanwhile
    bare = (bare_before + bare_after) / 2
    print(f"# {dt.date.today()} {platform.machine()} {os.cpu_count()} cores; {args.method} on {args.backbone} "
          f"@ {args.image_size}, batch {args.batch}, {args.frames} frames of {args.side} px, {args.actors} ingest "
          f"actor(s), {args.threads} torch threads")  # fmt: skip
    print("| measure | frames/s |")
    print("|---|---|")
    print(f"| bare method (predict on decoded frames), before / after the pipeline | {bare_before:.2f} / "
          f"{bare_after:.2f} |")
    print(f"| whole pipeline (Kafka -> ingest -> Serve -> Redis) | {pipeline:.2f} |")
    print(f"| **ratio pipeline / bare** | **{pipeline / bare:.2f}** |")
    print(f"(app start to first result: {cold_start:.1f} s, not counted)")
    if abs(bare_before - bare_after) > 0.1 * bare:
        print("WARNING: the two bare runs differ by more than 10%: the machine was busy; repeat on a quiet machine")


if __name__ == "__main__":
    main()
