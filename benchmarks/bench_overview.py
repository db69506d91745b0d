"""The web view's overview and ``zsad status`` as cameras multiply: render time and Redis round trips.

Usage: python -m benchmarks.bench_overview [--cameras 8,32,128] [--results 500] [--repeats 5]

One redis-server holds, per camera, ``--results`` stored results (the overview reads the newest 500 of each);
every fourth camera is paused through the live settings, so the settings' stored versions are read too. The view
is the application the Serve deployment runs (``build_api`` on a ``ViewBackend``), served in this process by
uvicorn on a loopback port, without Prometheus or an ingest controller. Per camera count: the median over
``--repeats`` of ``GET /`` and ``GET /api/overview`` (first page), and of what ``zsad status`` reads and prints;
and the Redis round trips each makes (packets sent by the view's client, a pipeline being one).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from unittest import mock

import redis.connection
import uvicorn

from services.config import ZsadConfig
from services.local_stack.service_processes import RedisServer, free_port
from services.operator_view.app import ViewBackend, build_api
from services.stores.result_store import FrameResult, ResultStore

TOKEN = "bench-viewer-token-" + "x" * 8


def _config(server: RedisServer, cameras: int) -> ZsadConfig:
    return ZsadConfig(
        redis={"url": server.url, "password": server.password},
        registry={"root": "redis://", "namespace": f"bench:{cameras}:registry"},
        cameras={f"cam{cameras}-{i:03d}": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
                 for i in range(cameras)},
        view={"viewer_token": TOKEN},
    )


def _store_results(config: ZsadConfig, results: int) -> None:
    store = ResultStore.from_config(config)
    now = time.time()
    for index, camera in enumerate(config.cameras):
        batch = [FrameResult(camera, f"{camera}-{n}", score=0.9 if (n + index) % 7 == 0 else 0.1,
                             threshold=0.5, method="clip-ad", capture_ts=now - 0.05, infer_ts=now)
                 for n in range(results)]  # fmt: skip
        for start in range(0, len(batch), 100):
            store.write_results(batch[start : start + 100])
    store.close()


@contextlib.contextmanager
def _serving(config: ZsadConfig) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(build_api(ViewBackend(config)), port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def _counting_round_trips() -> Iterator[list[int]]:
    """Count the packets redis-py sends (a command or a whole pipeline is one) while the block runs."""
    sent = [0]
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: object, check_health: bool = True) -> None:
        sent[0] += 1
        original(self, command, check_health)

    with mock.patch.object(redis.connection.AbstractConnection, "send_packed_command", counted):
        yield sent


def _measure(call: Callable[[], object], repeats: int) -> tuple[float, int]:
    """Median milliseconds of ``call`` over ``repeats`` (after one warm-up), and the round trips of one call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    with _counting_round_trips() as sent:
        call()
    return statistics.median(times), sent[0]


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.read()


def _status(config: ZsadConfig) -> None:
    from services.cli import cmd_stack

    args = argparse.Namespace(json=False, address=None, all=False, top=20, config=None)
    with mock.patch.object(cmd_stack, "config_from_args", return_value=config), \
            mock.patch("services.local_stack.control.running_stack", return_value=None), \
            contextlib.redirect_stdout(io.StringIO()):  # fmt: skip
        cmd_stack.cmd_status(args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", default="8,32,128")
    parser.add_argument("--results", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {args.results} results per camera")
    print(f"{'cameras':>8}{'page ms':>10}{'trips':>7}{'json ms':>10}{'trips':>7}{'status ms':>11}{'trips':>7}")
    with tempfile.TemporaryDirectory() as folder, RedisServer(data_dir=folder) as server:
        for cameras in (int(n) for n in args.cameras.split(",")):
            config = _config(server, cameras)
            _store_results(config, args.results)
            backend = ViewBackend(config)
            for camera in list(config.cameras)[::4]:
                backend.settings.update(camera, {"paused": True}, actor="bench", reason="a paused camera")
            with _serving(config) as base:
                page = _measure(lambda base=base: _get(base + "/"), args.repeats)
                api = _measure(lambda base=base: _get(base + "/api/overview"), args.repeats)
            status = _measure(lambda config=config: _status(config), args.repeats)
            print(f"{cameras:>8}{page[0]:>10.0f}{page[1]:>7}{api[0]:>10.0f}{api[1]:>7}{status[0]:>11.0f}{status[1]:>7}")


if __name__ == "__main__":
    main()
