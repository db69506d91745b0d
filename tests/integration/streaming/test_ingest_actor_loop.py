"""The ingest actor around its loop, in this process (Ray only restarts it): what a crash of the loop leaves in
the logs. Redis is real (the actor follows live camera settings from it); the broker address is one the Kafka
client refuses at once (a broker that is away crashes the loop the same way, after a 30 s bootstrap timeout)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from services.config import ZsadConfig
from services.frame_path.ingest_actor import IngestActor
from services.local_stack.service_processes import RedisServer

pytestmark = pytest.mark.integration


def test_a_crashed_loop_is_logged_once_with_its_traceback(
    redis_server: RedisServer, unique: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = ZsadConfig(
        kafka={"bootstrap_servers": ["127.0.0.1:no-port"], "frames_topic": f"frames-{unique}"},
        redis={"url": redis_server.url, "password": redis_server.password},
        registry={"namespace": f"ns-{unique}"},
        cameras={f"cam-{unique}": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}},
    )
    actor = IngestActor(config, [0], inspector=None, name=f"crash-{unique}")

    async def crash_once() -> None:
        assert await actor.ensure_running()
        while actor.worker.running or not actor.worker.error:
            await asyncio.sleep(0.05)
        assert not await actor.ensure_running()  # sees the crash, backs off
        assert (await actor.stats())["loop_state"] == "backing_off"

    caplog.set_level(logging.INFO)
    try:
        asyncio.run(crash_once())
    finally:
        actor.follower.stop()
    gc.collect()  # a task whose exception nobody retrieved is reported when it is freed
    ours = ("services", "asyncio")  # kafka-python logs each refused connection itself
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name.split(".")[0] in ours]
    assert [record.getMessage().split(":")[1] for record in errors] == [" ingest loop crashed (1 in a row)"]
    crash = errors[0].exc_info[1] if errors[0].exc_info else None
    assert crash is not None and str(crash) in errors[0].getMessage()  # the traceback of the error it names
