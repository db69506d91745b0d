"""The web view's overview as cameras multiply: Redis round trips that do not grow with the camera count, pages of
cameras with those needing attention first, and the summary of all of them on every page.

The view is the application the Serve deployment runs (``build_api`` on a ``ViewBackend``), served here by uvicorn
on a loopback port.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from unittest import mock

import pytest
import redis.connection
import uvicorn

from services.config import ZsadConfig
from services.local_stack.service_processes import RedisServer, free_port
from services.operator_view.app import ViewBackend, build_api
from services.read_models import PAGE_SIZE
from services.stores.result_store import FrameResult, ResultStore

pytestmark = pytest.mark.integration
TOKEN = "viewer-" + "v" * 20


def _config(redis_server: RedisServer, unique: str, cameras: int) -> ZsadConfig:
    return ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        registry={"root": "redis://", "namespace": f"test:{unique}:registry"},
        cameras={f"c{unique}-{i:03d}": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}
                 for i in range(cameras)},
        view={"viewer_token": TOKEN},
    )  # fmt: skip


def _store(config: ZsadConfig, camera: str, scores: list[float]) -> None:
    now = time.time()
    store = ResultStore.from_config(config)
    results = [FrameResult(camera, f"{camera}-{n}", score=score, threshold=0.5, method="clip-ad",
                           capture_ts=now - 0.1, infer_ts=now) for n, score in enumerate(scores)]  # fmt: skip
    store.write_results(results)
    store.close()


@contextlib.contextmanager
def _serving(config: ZsadConfig) -> Iterator[tuple[str, ViewBackend]]:
    backend = ViewBackend(config)
    server = uvicorn.Server(uvicorn.Config(build_api(backend), port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}", backend
    finally:
        server.should_exit = True
        thread.join(10)


def _get(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()


def _round_trips(url: str) -> int:
    """Packets the view's Redis client sends while it answers ``url`` (one per command, one per pipeline)."""
    sent = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: redis.connection.AbstractConnection, command: object, check_health: bool = True) -> None:
        sent.append(command)
        original(self, command, check_health)

    with mock.patch.object(redis.connection.AbstractConnection, "send_packed_command", counted):
        _get(url)
    return len(sent)


def test_an_overview_costs_the_same_round_trips_for_3_cameras_and_for_120(
    redis_server: RedisServer, unique: str
) -> None:
    trips = {}
    for count in (3, 120):
        config = _config(redis_server, f"{unique}n{count}", count)
        for camera in list(config.cameras)[::7]:
            _store(config, camera, [0.1, 0.9])
        with _serving(config) as (base, backend):
            backend.settings.update(next(iter(config.cameras)), {"paused": True}, actor="test", reason="a stored "
                                    "settings version is read too")  # fmt: skip
            _get(base + "/")  # the connection is open before counting
            trips[count] = (_round_trips(base + "/"), _round_trips(base + "/api/overview?page=2"))
    assert trips[3] == trips[120]
    assert trips[3][0] <= 5


def test_pages_put_cameras_needing_attention_first_and_summarise_all(redis_server: RedisServer, unique: str) -> None:
    config = _config(redis_server, unique, PAGE_SIZE + 10)
    cameras = list(config.cameras)
    anomalous, stale, paused = cameras[-1], cameras[-2], cameras[-3]
    for camera in cameras:
        if camera == anomalous:
            _store(config, camera, [0.1, 0.9, 0.95])  # the newest (written last) is a reject
        elif camera != stale:  # no result at all
            _store(config, camera, [0.1, 0.2])  # running: recent results, the newest passed
    with _serving(config) as (base, backend):
        backend.settings.update(paused, {"paused": True}, actor="test", reason="maintenance")
        first = json.loads(_get(base + "/api/overview"))
        second = json.loads(_get(base + "/api/overview?page=2"))
        beyond = json.loads(_get(base + "/api/overview?page=9"))
        html = _get(base + "/?page=2").decode()
    assert [row["camera"] for row in first["cameras"][:3]] == [anomalous, stale, paused]
    assert [row["state"] for row in first["cameras"][:4]] == ["anomalous", "stale", "paused", "running"]
    assert len(first["cameras"]) == PAGE_SIZE and len(second["cameras"]) == 10
    assert (first["page"], first["pages"], second["page"], beyond["page"]) == (1, 2, 2, 2)
    assert {row["camera"] for row in first["cameras"] + second["cameras"]} == set(cameras)
    assert first["summary"]["cameras"] == PAGE_SIZE + 10
    assert first["summary"]["by_state"] == {"anomalous": 1, "erroring": 0, "stale": 1, "paused": 1,
                                            "running": PAGE_SIZE + 7}  # fmt: skip
    assert first["summary"] == second["summary"]
    assert html.count("<tr data-camera=") == 10 and f'data-camera="{cameras[PAGE_SIZE + 6]}"' in html
    assert f"{PAGE_SIZE + 10} cameras: 1 anomalous, 0 erroring, 1 stale, 1 paused" in html
