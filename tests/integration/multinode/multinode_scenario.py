"""A Ray cluster of several raylets on this host, run as its own process by ``test_multinode.py``.

Why a separate process: a driver joins one Ray cluster, and the integration session already has one
(``local_ray``). This script starts its own cluster with :class:`ray.cluster_utils.Cluster` (a head and worker
nodes, each its own raylet with its own worker processes), streams frames through the Serve application with
custom resources that put the Inspector replicas on the worker nodes and the ingest actors on the head, kills a
worker node mid-stream, adds a new one, and writes what it observed (where every actor ran, what was produced)
to a JSON file. The test process then checks the results in Redis against that record.

Usage: ``python multinode_scenario.py REQUEST.json OBSERVED.json``; the request holds the Redis and broker
addresses, the test's unique suffix and the directory for the nodes' artifact cache.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cluster_helpers import FAST_NODE_FAILURE, scenario_main, wait_for

STREAMING_TESTS = Path(__file__).resolve().parents[1] / "streaming"
sys.path.insert(0, str(STREAMING_TESTS))

METHOD = "clip-ad+"
INSPECTOR_CAPACITY = 2  # replicas one worker node can hold: the survivor of a node failure takes them all
FRAMES_PER_S = 12.0


def _config(request: dict[str, Any], num_replicas: int) -> Any:
    from stream_helpers import MODEL_SIDE

    from services.config import ZsadConfig

    unique = request["unique"]
    return ZsadConfig(
        kafka={"bootstrap_servers": [request["bootstrap"]], "frames_topic": f"frames-{unique}",
               "dlq_topic": f"dlq-{unique}", "group_id": f"group-{unique}", "partitions": 2},
        redis={"url": request["redis_url"], "password": request["redis_password"]},
        cameras={request["camera"]: {"method": METHOD, "class_name": "object", "threshold": 0.5,
                                     "image_size": MODEL_SIDE, "prompt_version": "champion"}},
        serving={"backbone": "zsad-tiny-vit", "max_batch_size": 8, "torch_threads": 1, "num_cpus": 0.5,
                 "num_replicas": num_replicas, "resources": {"inspector": 1}, "health_check_period_s": 2.0},
        ingest={"num_actors": 2, "max_in_flight": 8, "max_retries": 1, "resources": {"ingest": 0.1}},
        registry={"root": "redis://", "namespace": request["namespace"], "cache_dir": request["cache_dir"]},
    )  # fmt: skip


class FrameStream:
    """Produces frames at a steady rate in a thread until stopped; frame ids are ``<camera>-<n>``."""

    def __init__(self, config: Any, camera: str) -> None:
        self.config = config
        self.camera = camera
        self.sent: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="frames", daemon=True)

    def start(self) -> FrameStream:
        self._thread.start()
        return self

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(30)
        return self.sent

    def _run(self) -> None:
        from stream_helpers import frame_bytes

        from services.frame_path.producer import FrameProducer

        with FrameProducer.from_config(self.config) as producer:
            while not self._stop.wait(1.0 / FRAMES_PER_S):
                frame_id = f"{self.camera}-{len(self.sent)}"
                producer.send_frame(self.camera, frame_bytes(len(self.sent)), frame_id=frame_id).get(timeout=30)
                self.sent.append(frame_id)


def _alive_actors(class_name: str) -> dict[str, str]:
    """Actor id -> node id of the live actors of a class."""
    import ray
    from ray.util.state import list_actors

    # By address: with two workers of `make test` (or several suites) on one machine, several clusters run.
    here = ray.get_runtime_context().gcs_address
    alive = [("class_name", "=", class_name), ("state", "=", "ALIVE")]
    return {actor.actor_id: actor.node_id
            for actor in list_actors(address=here, filters=alive, raise_on_missing_output=True)}  # fmt: skip


def _settled_replicas(
    app_name: str, count: int, placed: Callable[[set[str]], bool], timeout_s: float, what: str
) -> dict[str, str]:
    """Wait until Serve counts ``count`` Inspector replicas running (none in another state) and their nodes pass
    ``placed``; the replicas (actor id -> node id) from the one look at the actor table that passed.

    Why Serve's count too: a replica's actor is alive before its constructor has run, and an actor table read
    while Serve still starts or stops one can differ from the next read.
    """
    from ray import serve

    seen: dict[str, str] = {}

    def settled() -> bool:
        application = serve.status().applications.get(app_name)
        states = application.deployments["Inspector"].replica_states if application else {}
        if dict(states) != {"RUNNING": count}:
            return False
        replicas = _alive_actors(f"ServeReplica:{app_name}:Inspector")
        if len(replicas) != count or not placed(set(replicas.values())):
            return False
        seen.update(replicas)
        return True

    wait_for(settled, timeout_s, what)
    return seen


def _alive_nodes(class_name: str) -> list[str]:
    """Node ids of the live actors of a class, one per actor, sorted."""
    return sorted(_alive_actors(class_name).values())


def _deploy(dashboard: str, http_port: int, config: Any, config_path: Path, app_name: str) -> None:
    """Deploy the application from a Serve config, as ``serve deploy`` and a RayService do, and wait until it runs.

    Why not ``serve.run``: it gives every deployment a new code version on each call, so the scale-out below would
    restart every replica (a rolling update of all three deployments, 45 s here) instead of adding one. From a
    config whose import path and arguments are unchanged, a new ``num_replicas`` is a change of settings only:
    Serve keeps the running replicas and adds one.
    """
    from ray import serve
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    from services.local_stack.service_processes import HOST
    from services.serve_app import serve_config

    application = {**serve_config(config, str(config_path)), "name": app_name, "route_prefix": f"/{app_name}"}
    ServeSubmissionClient(dashboard).deploy_applications({
        "proxy_location": "HeadOnly", "http_options": {"host": HOST, "port": http_port},
        "applications": [application]})  # fmt: skip

    def running() -> bool:
        status = serve.status().applications.get(app_name)
        # UNHEALTHY is not final: a replica whose health check failed (a loaded machine) is replaced.
        assert status is None or status.status != "DEPLOY_FAILED", status
        return status is not None and status.status == "RUNNING"

    wait_for(running, 120, f"application {app_name} to run")


def run(request: dict[str, Any]) -> dict[str, Any]:
    """The scenario; returns what it observed (node ids, actor placements per phase, frames sent)."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from services.frame_path.producer import ensure_topics
    from services.local_stack.service_processes import HOST, free_port
    from services.local_stack.stack_process import write_config
    from services.stores.result_store import ResultStore

    app_name, camera = "zsad-multinode", request["camera"]
    replica_class = f"ServeReplica:{app_name}:Inspector"
    config = _config(request, num_replicas=2)
    # The replicas read it from this file (mode 0600: it holds the Redis password), as from a RayService's config.
    config_path = Path(request["cache_dir"]).parent / "multinode-config.yaml"
    write_config(config, config_path)
    ensure_topics(config.kafka)
    store = ResultStore.from_config(config)
    started = time.monotonic()
    timeline: dict[str, float] = {}

    def mark(phase: str) -> None:  # seconds since the start, printed by the test: where the scenario's time goes
        timeline[phase] = round(time.monotonic() - started, 1)

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {"ingest": 1}, "include_dashboard": True, "dashboard_host": HOST,
        "dashboard_port": free_port(), "_system_config": FAST_NODE_FAILURE,
    })  # fmt: skip
    observed: dict[str, Any] = {"head": cluster.head_node.node_id, "timeline": timeline}
    mark("head started")
    try:
        workers = [cluster.add_node(num_cpus=2, resources={"inspector": INSPECTOR_CAPACITY}) for _ in range(2)]
        observed["workers"] = [worker.node_id for worker in workers]
        cluster.wait_for_nodes()
        mark("worker nodes started")
        context = ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
        dashboard, http_port = f"http://{context.dashboard_url}", free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": HOST, "port": http_port})
        _deploy(dashboard, http_port, config, config_path, app_name)
        mark("application deployed")
        stream = FrameStream(config, camera).start()
        wait_for(lambda: store.count_results(camera) >= 20, 120, "the first 20 results")
        mark("first 20 results")
        observed["replicas_before"] = _alive_nodes(replica_class)
        observed["ingest_actors"] = _alive_nodes("IngestActor")
        observed["ingest_controller"] = _alive_nodes(f"ServeReplica:{app_name}:IngestController")

        doomed = next(worker for worker in workers if worker.node_id in observed["replicas_before"])
        observed["killed"] = doomed.node_id
        observed["results_at_kill"] = store.count_results(camera)
        cluster.remove_node(doomed, allow_graceful=False)  # SIGKILL: its raylet and every worker process on it
        after_kill = _settled_replicas(app_name, 2, lambda nodes: doomed.node_id not in nodes, 90,
                                       "Serve to replace the replica of the dead node")  # fmt: skip
        mark("replica replaced after the kill")
        observed["replicas_after_kill"] = sorted(after_kill.values())
        observed["replica_ids_after_kill"] = sorted(after_kill)
        resumed = store.count_results(camera)
        wait_for(lambda: store.count_results(camera) >= resumed + 20, 90, "20 more results after the node failure")

        mark("20 results after the kill")
        joined = cluster.add_node(num_cpus=2, resources={"inspector": INSPECTOR_CAPACITY})
        cluster.wait_for_nodes()
        observed["joined"] = joined.node_id
        mark("node joined")
        # Scaling out after adding capacity: the survivor is full, so the third replica must use the new node.
        _deploy(dashboard, http_port, _config(request, num_replicas=3), config_path, app_name)
        after_join = _settled_replicas(app_name, 3, lambda nodes: joined.node_id in nodes, 120,
                                       "a replica on the node that joined")  # fmt: skip
        mark("third replica on the new node")
        observed["replicas_after_join"] = sorted(after_join.values())
        observed["replica_ids_after_join"] = sorted(after_join)
        resumed = store.count_results(camera)
        wait_for(lambda: store.count_results(camera) >= resumed + 20, 90, "20 more results on the grown cluster")

        mark("20 results on the grown cluster")
        observed["sent"] = stream.stop()
        wait_for(lambda: store.count_results(camera) >= len(observed["sent"]), 120, "a result for every frame sent")
        mark("every result")
        serve.delete(app_name)  # the ingest drain commits the last offsets
        mark("application deleted")
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        mark("cluster shut down")
    return observed


if __name__ == "__main__":
    sys.exit(scenario_main(run, sys.argv[1:]))
