"""The Python client's ``follow`` against a real Redis: every decision once, in order, across a dropped connection."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.client import ZsadClient
from services.config import ZsadConfig
from services.local_stack.service_processes import RedisServer
from services.stores.result_store import FrameResult, ResultStore

pytestmark = pytest.mark.integration

PER_CAMERA = 150  # two cameras: 300 decisions


def test_follow_delivers_300_decisions_exactly_once_in_order_across_a_reconnect(
    redis_server: RedisServer, unique: str
) -> None:
    cameras = [f"a-{unique}", f"b-{unique}"]
    config = ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5} for camera in cameras},
    )
    store = ResultStore.from_config(config)
    client = ZsadClient(config, block_ms=500)
    received: dict[str, list[str]] = {camera: [] for camera in cameras}

    def follow(camera: str) -> None:
        for decision in client.follow(camera, since="0"):
            received[camera].append(decision.frame_id)
            if len(received[camera]) >= PER_CAMERA:
                return

    followers = [threading.Thread(target=follow, args=(camera,), daemon=True) for camera in cameras]
    for follower in followers:
        follower.start()
    rng = np.random.default_rng(0)
    killed = 0
    for index in range(PER_CAMERA):
        for camera in cameras:
            store.write_result(FrameResult(camera, f"f{index}", float(rng.random()), 0.5, "clip-ad",
                                           anomaly_map=rng.random((4, 4))))  # fmt: skip
        if index == PER_CAMERA // 2:
            # Drop the followers' blocked connections (their command is XREAD), as a network failure would.
            time.sleep(0.2)
            for entry in store.client.client_list():
                if entry.get("cmd") == "xread":
                    killed += int(store.client.client_kill_filter(_id=entry["id"]))
    for follower in followers:
        follower.join(timeout=30)
    assert killed >= 1, "no follower connection was dropped, so no reconnect was tested"
    expected = [f"f{index}" for index in range(PER_CAMERA)]
    for camera in cameras:
        assert received[camera] == expected, f"{camera}: decisions missing, repeated or out of order"
    client.close()
    store.close()


def test_results_and_result_read_what_the_store_wrote(redis_server: RedisServer, unique: str) -> None:
    camera = f"c-{unique}"
    config = ZsadConfig(redis={"url": redis_server.url, "password": redis_server.password},
                        cameras={camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5}})  # fmt: skip
    store = ResultStore.from_config(config)
    scores = [0.3, 0.9, 0.1, 0.7]
    for index, score in enumerate(scores):
        store.write_result(FrameResult(camera, f"f{index}", score, 0.5, "clip-ad"))
    client = ZsadClient(config)
    assert [r["frame_id"] for r in client.results(camera, worst=2)] == ["f1", "f3"]
    assert [r["frame_id"] for r in client.results(camera, recent=3)] == ["f3", "f2", "f1"]
    assert client.result(camera, "f1")["score"] == repr(0.9)
    with pytest.raises(ValueError, match="exactly one"):
        client.results(camera, worst=1, recent=1)
    client.close()
    store.close()
