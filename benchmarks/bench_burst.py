"""One burst of frames against Serve autoscaling: consumer lag, Inspector replicas and frames/s over time.

Usage: python -m benchmarks.bench_burst [--frames 600] [--max-replicas 3] [--target 4] [--out PNG]

The stream runs on real local services (noida-db, redis-server, a local Ray with Serve) with the tiny ViT at
64 px and one camera. After a warm-up (the first replica loaded and scoring), ``--frames`` frames are produced at
once. Every half second the benchmark records the consumer group's lag (end offsets minus committed offsets),
the running Inspector replicas (``serve.status()``) and the results written to Redis, until the lag is zero and
the replicas are back to the minimum. It prints the table of events and draws the three series into ``--out``
with OpenCV. Why the tiny model: the subject is the control loop (lag -> ongoing requests -> replicas), not model
speed; on a machine with few cores more replicas add little throughput, which the frames/s panel shows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer, free_port
from services.stores.result_store import ResultStore
from zsad_core.imageio import encode_jpeg

CAMERA = "burst"
APP = "bench-burst"
SAMPLE_EVERY_S = 0.5
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "bench_burst.png"


@dataclass(frozen=True)
class Sample:
    """One observation ``t_s`` seconds after the burst was sent."""

    t_s: float
    lag: int
    replicas: int
    results: int


def _frames(count: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [encode_jpeg(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), quality=80) for _ in range(count)]


class LagReader:
    """The consumer group's total lag over the frames topic: what the ingest actors have not committed yet."""

    def __init__(self, config: ZsadConfig) -> None:
        from kafka import KafkaConsumer
        from kafka.structs import TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers,
                                      group_id=config.kafka.group_id, enable_auto_commit=False)  # fmt: skip
        topic = config.kafka.frames_topic
        self.partitions = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic))]

    def lag(self) -> int:
        ends = self.consumer.end_offsets(self.partitions)
        committed = [self.consumer.committed(tp) or 0 for tp in self.partitions]
        return sum(ends.values()) - sum(committed)

    def close(self) -> None:
        self.consumer.close()


def _running_replicas() -> int:
    from ray import serve

    states = serve.status().applications[APP].deployments["Inspector"].replica_states
    return int(states.get("RUNNING", 0))


def run_burst(args: argparse.Namespace) -> list[Sample]:
    """Start the services, warm up, send the burst and sample until drained and scaled back down."""
    # Replicas and handles report ongoing requests every second instead of every 10 s, so the control loop
    # reacts within the benchmark's few seconds; set before Ray starts, inherited by every Ray process.
    os.environ["RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    os.environ["RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S"] = "1"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    from services.serve_app import app_from_config

    workdir = tempfile.mkdtemp(prefix="zsad-burst-")
    with RedisServer(data_dir=f"{workdir}/redis") as redis_server, NoidaBroker(data_dir=f"{workdir}/noida") as broker:
        autoscaling = {"min_replicas": 1, "initial_replicas": 1, "max_replicas": args.max_replicas,
                       "target_ongoing_requests": args.target, "upscale_delay_s": 1.0, "downscale_delay_s": 5.0,
                       "look_back_period_s": 2.0}  # fmt: skip
        config = ZsadConfig(
            kafka={"bootstrap_servers": [broker.bootstrap_servers], "partitions": 4},
            redis={"url": redis_server.url, "password": redis_server.password},
            cameras={CAMERA: {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": 64}},
            serving={"backbone": "zsad-tiny-vit", "max_batch_size": 8, "torch_threads": 1, "num_cpus": 0.5,
                     "autoscaling": autoscaling},
            ingest={"num_actors": 2, "max_in_flight": 32},
        )  # fmt: skip
        ensure_topics(config.kafka)
        frames = _frames(args.frames + args.warmup)
        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        lag = LagReader(config)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            store = ResultStore.from_config(config)
            serve.run(app_from_config(config), name=APP, route_prefix=f"/{APP}", blocking=False)
            with FrameProducer.from_config(config) as producer:
                for index in range(args.warmup):
                    producer.send_frame(CAMERA, frames[index], frame_id=f"warm-{index}")
                producer.flush()
                _wait(lambda: store.count_results(CAMERA) >= args.warmup, 180, "the warm-up frames")
                _wait(lambda: lag.lag() == 0 and _running_replicas() == 1, 60, "a quiet start")
                started = time.monotonic()
                for index in range(args.frames):
                    producer.send_frame(CAMERA, frames[args.warmup + index], frame_id=f"burst-{index}")
                producer.flush()
            samples = []
            while True:
                sample = Sample(time.monotonic() - started, lag.lag(), _running_replicas(),
                                store.count_results(CAMERA) - args.warmup)  # fmt: skip
                samples.append(sample)
                done = sample.results >= args.frames and sample.lag == 0 and sample.replicas == 1
                if done or sample.t_s > args.timeout_s:
                    break
                time.sleep(SAMPLE_EVERY_S)
            serve.delete(APP)
        finally:
            lag.close()
            serve.shutdown()
            ray.shutdown()
    return samples


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout_s:.0f} s")
        time.sleep(0.25)


def frame_rates(samples: list[Sample], window_s: float = 2.0) -> list[float]:
    """Results per second over the trailing ``window_s`` at each sample (0 for the first)."""
    rates = []
    for sample in samples:
        earlier = [s for s in samples if sample.t_s - window_s <= s.t_s < sample.t_s]
        first = earlier[0] if earlier else sample
        span = sample.t_s - first.t_s
        rates.append((sample.results - first.results) / span if span > 0 else 0.0)
    return rates


def draw(samples: list[Sample], out: Path, title: str) -> None:
    """Three panels over a shared time axis: lag, running replicas, frames/s."""
    import cv2

    width, panel, left, top = 960, 220, 90, 50
    series = [("consumer lag (frames)", [float(s.lag) for s in samples]),
              ("Inspector replicas (running)", [float(s.replicas) for s in samples]),
              ("frames/s (2 s window)", frame_rates(samples))]  # fmt: skip
    canvas = np.full((top + panel * len(series) + 40, width, 3), 255, np.uint8)
    cv2.putText(canvas, title, (left, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    times = [s.t_s for s in samples]
    t_max = max(times[-1], 1.0)
    for row, (label, values) in enumerate(series):
        y0, y1 = top + row * panel + 15, top + (row + 1) * panel - 25
        x0, x1 = left, width - 30
        v_max = max(max(values), 1.0)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (160, 160, 160), 1)
        for fraction in (0.0, 0.5, 1.0):
            y = int(y1 - fraction * (y1 - y0))
            cv2.putText(canvas, f"{fraction * v_max:.4g}", (10, y + 5), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        points = np.array([[x0 + (t / t_max) * (x1 - x0), y1 - (v / v_max) * (y1 - y0)]
                           for t, v in zip(times, values, strict=True)], np.int32)  # fmt: skip
        cv2.polylines(canvas, [points], False, (200, 80, 0), 2, cv2.LINE_AA)
        cv2.putText(canvas, label, (x0 + 8, y0 + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    axis_y = top + panel * len(series)
    for t in range(0, int(t_max) + 1, max(1, int(t_max) // 10)):
        x = int(left + (t / t_max) * (width - 30 - left))
        cv2.putText(canvas, f"{t}s", (x - 10, axis_y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=600, help="frames in the burst")
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--max-replicas", type=int, default=3)
    parser.add_argument("--target", type=float, default=4.0, help="target ongoing requests per replica")
    parser.add_argument("--timeout-s", type=float, default=150.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    samples = run_burst(args)
    rates = frame_rates(samples)
    peak_lag = max(samples, key=lambda s: s.lag)
    top = max(s.replicas for s in samples)
    scaled_up = next((s.t_s for s in samples if s.replicas == top), float("nan"))
    drained = next((s.t_s for s in samples if s.results >= args.frames and s.lag == 0), float("nan"))
    back = samples[-1].t_s if samples[-1].replicas == 1 else float("nan")
    one = [r for r, s in zip(rates, samples, strict=True) if s.replicas == 1 and s.lag > 0 and r > 0]
    many = [r for r, s in zip(rates, samples, strict=True) if s.replicas == top and s.lag > 0 and r > 0]
    title = (f"{dt.date.today()} {platform.machine()} {os.cpu_count()} cores: burst of {args.frames} frames, "
             f"tiny ViT @ 64, target {args.target:g} ongoing/replica, max {args.max_replicas}")  # fmt: skip
    draw(samples, args.out, title)
    print(f"# {title}")
    print("| measure | value |")
    print("|---|---|")
    print(f"| peak consumer lag | {peak_lag.lag} frames at {peak_lag.t_s:.1f} s |")
    print(f"| most running replicas | {top}, first at {scaled_up:.1f} s |")
    print(f"| lag drained (every result written) | {drained:.1f} s |")
    print(f"| back to 1 replica | {back:.1f} s |")
    print(f"| mean frames/s while lagging, 1 replica / {top} replicas | {_mean(one):.1f} / {_mean(many):.1f} |")
    print(f"plot: {args.out}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


if __name__ == "__main__":
    main()
