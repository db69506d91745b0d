"""Retraining across nodes: ``--workers 2`` one per node, a worker node killed mid-training, the run resumed.

The cluster runs in a child process (``training_scenario.py``), as in ``test_multinode.py``. The checkpoints go to
the ``redis://`` store and the data is built on each node from its ``synthetic:`` spec, so the restarted workers
(one on the survivor, one on a node that joined after the kill) resume from what the killed node stored. All raylets
of this host share one disk, so the test also checks that nothing of the run but Ray's bookkeeping is under the
driver's storage path: a shared path is what a real cluster does not have.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.local_stack.service_processes import RedisServer
from services.stores.artifact_registry import ArtifactRegistry

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).with_name("training_scenario.py")
SCENARIO_TIMEOUT_S = 300


@pytest.mark.takes_long(reason="a 3-raylet cluster, a node killed mid-training and a new one joining")
def test_training_resumes_from_the_last_checkpoint_after_a_worker_node_dies(
    redis_server: RedisServer, unique: str, tmp_path: Path
) -> None:
    namespace = f"test:{unique}:registry"
    request = {"unique": unique, "namespace": namespace, "redis_url": redis_server.url,
               "redis_password": redis_server.password, "scratch": str(tmp_path)}  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    started = time.monotonic()
    scenario = subprocess.Popen(
        [sys.executable, str(SCENARIO), str(tmp_path / "request.json"), str(tmp_path / "observed.json")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = scenario.communicate(timeout=SCENARIO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(scenario.pid, signal.SIGKILL)  # the scenario and every Ray process it started
        stdout, stderr = scenario.communicate()
    assert scenario.returncode == 0, f"scenario failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    observed = json.loads((tmp_path / "observed.json").read_text())
    print(f"scenario {time.monotonic() - started:.0f} s, of which training {observed['training_s']} s; "
          f"timeline (s): {observed['timeline']}")

    head, workers, killed, joined = observed["head"], observed["workers"], observed["killed"], observed["joined"]
    survivor = next(worker for worker in workers if worker != killed)
    first, resumed = observed["attempt_workers"]["0"], observed["attempt_workers"]["1"]
    # One worker per node, never on the head; the killed node held rank 0, the checkpoint writer.
    assert sorted(first.values()) == sorted(workers) and head not in first.values()
    assert first["0"] == killed
    # The survivor could take both workers; one_per_node put the second one on the node that joined.
    assert sorted(resumed.values()) == sorted([survivor, joined])

    outcome = observed["outcome"]
    assert observed["stored_at_kill"] == 1  # the node died after the epoch-1 checkpoint, before epoch 2
    assert outcome["attempt_starts"] == [0, 1], "the restarted workers resumed from epoch 1, not from scratch"
    assert outcome["epochs"] == [1, 2, 3] and outcome["epochs_done"] == 3
    assert outcome["checkpoint_location"] == (
        f"redis://{namespace}:checkpoints:multinode-{unique}:files:epoch-3")
    # Ray Train's directory on the driver holds its bookkeeping and the artifact, no checkpoint.
    assert not [name for name in observed["ray_run_dir"] if name.startswith("checkpoint")]

    registry = ArtifactRegistry("redis://", redis_server.client(), namespace=namespace)
    entry = registry.resolve("vcp-clip", "candidate")
    assert entry.version == outcome["registry_version"] and entry.training_data.startswith("synthetic:")
    assert entry.metrics["pixel_auroc"] == outcome["pixel_auroc"]
    registry.verify(entry)
