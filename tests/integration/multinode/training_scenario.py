"""``zsad train --workers 2 --one-per-node`` on a Ray cluster of several raylets, one of them killed mid-training.

Run as its own process by ``test_training_multinode.py``, for the reason ``multinode_scenario.py`` gives (a driver
joins one Ray cluster). A head that takes no training worker and two worker nodes, each able to take two (so only
``one_per_node`` keeps the pair apart); the checkpoints go to the ``redis://`` store, the training data is a
``synthetic:`` spec that each node builds itself. After epoch 1 both workers hold still (:class:`HoldAfterEpoch`)
until the node of rank 0, the one that writes the checkpoints, is killed (raylet and workers, SIGKILL); a new node
joins, Ray Train restarts the worker group on the survivor and the new node, and the run must resume from the
epoch-1 checkpoint, finish, and register its artifact. Every worker records where it ran (:class:`RecordNodes`).

Usage: ``python training_scenario.py REQUEST.json OBSERVED.json``; the request holds the Redis address and password,
the test's unique suffix and a scratch directory; the observed record holds node ids, where each attempt's workers
ran, the run's outcome and what the Ray run directory on the driver holds.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster_helpers import FAST_NODE_FAILURE, scenario_main, wait_for

TRAIN_DATA = "synthetic:classes=woven+wood,per_class=4,size=64"
EVAL_DATA = "synthetic:seed=7,classes=stone+disc,per_class=2,size=64"
TRAIN_RESOURCE = "trainer"
HOLD_S = 120.0  # longer than the node failure takes: a held attempt never goes on by itself


@dataclass(frozen=True)
class RecordNodes:
    """Each worker writes its node id per epoch into ``<key>:<attempt start>`` (field = rank) in Redis."""

    redis_url: str
    password: str
    key: str

    def __call__(self, finished: Any) -> None:
        import ray
        import redis

        with redis.Redis.from_url(self.redis_url, password=self.password) as client:
            client.hset(f"{self.key}:{finished.attempt_start}", str(finished.rank),
                        ray.get_runtime_context().get_node_id())  # fmt: skip


@dataclass(frozen=True)
class HoldAfterEpoch:
    """In an attempt that started from scratch, every worker sleeps after ``epoch`` (checkpoint stored, nodes
    recorded): the node is killed while the run is between epochs, after a checkpoint, for certain."""

    epoch: int

    def __call__(self, finished: Any) -> None:
        if finished.epoch == self.epoch and finished.attempt_start == 0:
            time.sleep(HOLD_S)


def run(request: dict[str, Any]) -> dict[str, Any]:
    """The scenario; returns what it observed."""
    import ray
    import redis
    from ray.cluster_utils import Cluster

    from services.config import ZsadConfig
    from services.prompt_lifecycle.training_checkpoints import CheckpointLocation
    from services.prompt_lifecycle.training_job import run_training, spec_from_fields

    unique, scratch = request["unique"], Path(request["scratch"])
    config = ZsadConfig(
        redis={"url": request["redis_url"], "password": request["redis_password"]},
        cameras={"cam1": {"method": "vcp-clip", "class_name": "object", "threshold": 0.5}},
        registry={"root": "redis://", "namespace": request["namespace"], "cache_dir": str(scratch / "cache")},
    )  # fmt: skip
    spec = spec_from_fields(
        method="vcp-clip", backbone="zsad-tiny-vit", pretrained=False, image_size=64, train_data=TRAIN_DATA,
        eval_data=EVAL_DATA, epochs=3, batch_size=2, seed=1, workers=2, one_per_node=True,
        worker_resources={TRAIN_RESOURCE: 1}, storage_path=scratch / "runs", name=f"multinode-{unique}",
        register_artifact=True, baseline=False,
    )  # fmt: skip
    nodes_key = f"test:{unique}:train-nodes"
    client = redis.Redis.from_url(request["redis_url"], password=request["redis_password"], decode_responses=True)

    def workers_of(attempt_start: int) -> dict[str, str]:
        return client.hgetall(f"{nodes_key}:{attempt_start}")

    # No exit hooks: they set a SIGTERM handler per node, which Python allows in the main thread only, and the
    # node that joins is added from the thread that kills, while training blocks the main one. The finally below
    # shuts the cluster down; the test kills the whole process group if the scenario hangs.
    began = time.monotonic()
    timeline: dict[str, float] = {}

    def mark(phase: str) -> None:  # seconds since the start, printed by the test: where the scenario's time goes
        timeline[phase] = round(time.monotonic() - began, 1)

    cluster = Cluster(initialize_head=True, shutdown_at_exit=False,
                      head_node_args={"num_cpus": 1, "_system_config": FAST_NODE_FAILURE})  # fmt: skip
    observed: dict[str, Any] = {"head": cluster.head_node.node_id, "timeline": timeline}
    mark("head started")
    try:
        nodes = [cluster.add_node(num_cpus=2, resources={TRAIN_RESOURCE: 2}) for _ in range(2)]
        observed["workers"] = [node.node_id for node in nodes]
        cluster.wait_for_nodes()
        mark("worker nodes started")
        ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)

        def kill_the_writer_and_add_a_node() -> None:
            wait_for(lambda: len(workers_of(0)) == 2, 180, "both workers to finish epoch 1")
            mark("epoch 1 done on both workers")
            with CheckpointLocation.from_config(config, spec.run_name).open() as store:
                stored = store.latest(spec.epochs)
            observed["stored_at_kill"] = None if stored is None else stored.epoch
            doomed = next(node for node in nodes if node.node_id == workers_of(0)["0"])
            observed["killed"] = doomed.node_id
            cluster.remove_node(doomed, allow_graceful=False)  # SIGKILL: its raylet and every worker process on it
            mark("node killed")
            observed["joined"] = cluster.add_node(num_cpus=2, resources={TRAIN_RESOURCE: 2}).node_id
            mark("node joined")

        killer = threading.Thread(target=kill_the_writer_and_add_a_node, name="killer", daemon=True)
        killer.start()
        started = time.monotonic()
        outcome = run_training(spec, config, epoch_callbacks=[
            RecordNodes(request["redis_url"], request["redis_password"], nodes_key), HoldAfterEpoch(1)])
        observed["training_s"] = round(time.monotonic() - started, 1)
        mark("training done")
        killer.join(10)
        observed["attempt_workers"] = {start: workers_of(start) for start in outcome.attempt_starts}
        observed["outcome"] = {
            "attempt_starts": outcome.attempt_starts, "epochs": [log["epoch"] for log in outcome.history],
            "epochs_done": outcome.epochs_done, "registry_version": outcome.registry_version,
            "checkpoint_location": outcome.checkpoint_location, "pixel_auroc": outcome.metrics["pixel_auroc"],
        }  # fmt: skip
        observed["ray_run_dir"] = sorted(path.name for path in spec.run_dir.iterdir())
    finally:
        client.close()
        ray.shutdown()
        cluster.shutdown()
        mark("cluster shut down")
    return observed


if __name__ == "__main__":
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.2"  # a dead worker is noticed within a fifth of a second
    os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"  # it reports graceful drains; this node is killed
    sys.exit(scenario_main(run, sys.argv[1:]))
