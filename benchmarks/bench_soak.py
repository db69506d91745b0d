"""Soak: a long stream with a random fault every ``--fault-every`` seconds; what was lost, duplicated, dead-lettered.

Usage: python -m benchmarks.bench_soak [--frames 10000] [--cameras 2] [--fps 40] [--fault-every 30] [--seed 0]

The whole pipeline on this machine (noida-db, a local Ray with Serve, a redis-server with AOF) on the tiny CLIP at
64 px, so the model is not what limits the run. A producer thread sends ``--frames`` frames at ``--fps``; a fault
thread picks one fault at random every ``--fault-every`` seconds:

* ``kill_ingest``: SIGKILL an ingest actor (Ray restarts it);
* ``kill_replica``: SIGKILL the Inspector replica (Serve replaces it);
* ``freeze_replica``: SIGSTOP the replica for 5 s, then SIGKILL it;
* ``kill_controller``: SIGKILL the IngestController replica (Serve replaces it; it starts new ingest actors);
* ``freeze_redis``: SIGSTOP redis-server for 10 s;
* ``restart_redis``: SIGKILL redis-server and start it again on the same port and AOF file.

Afterwards: lost = frames sent without a result, duplicated = events beyond one per frame, dead-lettered = records
in the dead-letter topic, and the longest stall = the longest time the result count did not move while frames
were outstanding. Results go to BENCHMARKS.md by hand, with the command, machine and date printed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import signal
import tempfile
import threading
import time
from typing import Any

import numpy as np

from services.config import ZsadConfig
from services.frame_path.producer import FrameProducer, ensure_topics
from services.local_stack.service_processes import NoidaBroker, RedisServer, free_port
from services.stores.result_store import ResultStore
from zsad_core.imageio import encode_jpeg

FAULTS = ("kill_ingest", "kill_replica", "freeze_replica", "kill_controller", "freeze_redis", "restart_redis")
APP = "soak"


def _pids(class_name: str) -> list[int]:
    from ray.util.state import list_actors

    alive = [("class_name", "=", class_name), ("state", "=", "ALIVE")]
    return [int(actor.pid) for actor in list_actors(filters=alive, raise_on_missing_output=False)]


class Faults(threading.Thread):
    """Injects one random fault every ``every_s`` seconds until stopped; records what it did and when."""

    def __init__(self, redis_server: RedisServer, every_s: float, seed: int) -> None:
        super().__init__(daemon=True)
        self.redis_server, self.every_s, self.rng = redis_server, every_s, random.Random(seed)
        self.done: list[tuple[float, str]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            fault = self.rng.choice(FAULTS)
            try:
                getattr(self, fault)()
                self.done.append((time.monotonic(), fault))
            except Exception as exc:  # noqa: BLE001 - a fault that found nothing to break is reported, not fatal
                self.done.append((time.monotonic(), f"{fault} (skipped: {exc})"))

    def _kill_one(self, class_name: str) -> None:
        pids = _pids(class_name)
        if not pids:
            raise RuntimeError(f"no live {class_name}")
        os.kill(self.rng.choice(pids), signal.SIGKILL)

    def kill_ingest(self) -> None:
        self._kill_one("IngestActor")

    def kill_replica(self) -> None:
        self._kill_one(f"ServeReplica:{APP}:Inspector")

    def freeze_replica(self) -> None:
        pids = _pids(f"ServeReplica:{APP}:Inspector")
        os.kill(pids[0], signal.SIGSTOP)
        time.sleep(5)
        os.kill(pids[0], signal.SIGKILL)

    def kill_controller(self) -> None:
        self._kill_one(f"ServeReplica:{APP}:IngestController")

    def freeze_redis(self) -> None:
        pid = self.redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGSTOP)
        time.sleep(10)
        os.kill(pid, signal.SIGCONT)

    def restart_redis(self) -> None:
        pid = self.redis_server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # a crash: no shutdown flush; the AOF (fsync every second) is what survives
        self.redis_server.stop()  # reaps the dead process; the data directory is ours, so it stays
        time.sleep(2)
        self.redis_server.start()


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    import ray
    from ray import serve

    from services.serve_app import app_from_config

    workdir = tempfile.mkdtemp(prefix="zsad-soak-")
    cameras = [f"soak{index}" for index in range(args.cameras)]
    rng = np.random.default_rng(args.seed)
    frames = [encode_jpeg(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), quality=80) for _ in range(64)]
    # A fixed port: restart_redis starts the server again where the pipeline's config points.
    with RedisServer(port=free_port(), data_dir=f"{workdir}/redis", persistent=True) as redis_server, \
            NoidaBroker(data_dir=f"{workdir}/noida") as broker:  # fmt: skip
        config = ZsadConfig(
            kafka={"bootstrap_servers": [broker.bootstrap_servers], "partitions": 4},
            redis={"url": redis_server.url, "password": redis_server.password},
            cameras={camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": 64}
                     for camera in cameras},
            serving={"backbone": "zsad-tiny-vit", "max_batch_size": 16, "torch_threads": 1},
            ingest={"num_actors": 2, "max_in_flight": 32, "max_retries": 1},
        )  # fmt: skip
        ensure_topics(config.kafka)
        # The dashboard serves the state API the fault thread finds its victims with.
        ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                 dashboard_port=free_port(), logging_level="ERROR", log_to_driver=False)  # fmt: skip
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
            store = ResultStore.from_config(config)
            serve.run(app_from_config(config), name=APP, route_prefix=f"/{APP}", blocking=False)
            sent = 0
            samples: list[tuple[float, int]] = []
            faults = Faults(redis_server, args.fault_every, args.seed)
            started = time.monotonic()
            faults.start()
            with FrameProducer.from_config(config) as producer:
                for index in range(args.frames):
                    camera = cameras[index % len(cameras)]
                    producer.send_frame(camera, frames[index % len(frames)] + index.to_bytes(4, "big"),
                                        frame_id=f"f{index}")  # fmt: skip
                    sent += 1
                    if index % args.fps == 0:
                        samples.append((time.monotonic(), _stored(store, cameras)))
                    time.sleep(max(0.0, started + (index + 1) / args.fps - time.monotonic()))
            deadline = time.monotonic() + args.drain_timeout
            while (done := _stored(store, cameras)) < sent and time.monotonic() < deadline:
                samples.append((time.monotonic(), done))
                time.sleep(0.5)
            faults.stopped.set()
            faults.join()
            samples.append((time.monotonic(), _stored(store, cameras)))
            events = sum(store.count_events(camera) for camera in cameras)
            letters = _dead_letters(config)
            serve.delete(APP)
        finally:
            serve.shutdown()
            ray.shutdown()
    return {
        "frames": sent,
        "stored": done,
        "lost": sent - done,
        "duplicated_events": events - done,
        "dead_lettered": letters,
        "longest_stall_s": round(_longest_stall(samples), 1),
        "seconds": round(samples[-1][0] - started, 1),
        "faults": [fault for _, fault in faults.done],
    }


def _stored(store: ResultStore, cameras: list[str]) -> int:
    try:
        return sum(store.count_results(camera) for camera in cameras)
    except Exception:  # noqa: BLE001 - Redis frozen or restarting: no sample now
        return -1


def _dead_letters(config: ZsadConfig) -> int:
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        partitions = [TopicPartition(config.kafka.dlq_topic, p)
                      for p in consumer.partitions_for_topic(config.kafka.dlq_topic) or ()]  # fmt: skip
        return int(sum(consumer.end_offsets(partitions).values())) if partitions else 0
    finally:
        consumer.close()


def _longest_stall(samples: list[tuple[float, int]]) -> float:
    """Longest interval over which the stored count did not grow (unreadable samples count as no growth)."""
    longest, since, best = 0.0, None, -1
    for moment, count in samples:
        if count > best:
            best, since = count, moment
        elif since is not None:
            longest = max(longest, moment - since)
    return longest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--fps", type=int, default=40)
    parser.add_argument("--fault-every", type=float, default=30.0)
    parser.add_argument("--drain-timeout", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report = run(args)
    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.machine()} {os.cpu_count()} cores; "
          f"python -m benchmarks.bench_soak --frames {args.frames} --cameras {args.cameras} --fps {args.fps} "
          f"--fault-every {args.fault_every} --seed {args.seed}")  # fmt: skip
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
