"""Beyond one machine: a head and worker raylets, a worker node killed mid-stream, a new node joining.

The cluster runs in a child process (``multinode_scenario.py``): a driver can join only one Ray cluster and the
session's ``local_ray`` may already be up. This test registers the prompt version on the driver's side with the
``redis://`` artifact store (nothing on a shared disk), runs the scenario, and checks its record of actor
placements and every frame's result and event in Redis.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.local_stack.service_processes import KafkaBroker, RedisServer
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.result_store import ResultStore

pytestmark = pytest.mark.integration

SCENARIO = Path(__file__).with_name("multinode_scenario.py")
SCENARIO_TIMEOUT_S = 300


@pytest.mark.takes_long(
    reason="a 4-raylet cluster in a child process, a node killed and a new one joining: 40 s to"
    " the first results (raylets, Serve, every replica's process importing torch), 80 s in all"
)
def test_replicas_survive_a_node_failure_and_spread_to_a_new_node(
    noida_broker: KafkaBroker, redis_server: RedisServer, unique: str, tmp_path: Path
) -> None:
    sys.path.insert(0, str(SCENARIO.parents[1] / "streaming"))
    from test_prompt_hot_swap import METHOD, make_versions

    namespace = f"test:{unique}:registry"
    registry = ArtifactRegistry("redis://", redis_server.client(), namespace=namespace)
    (version,) = make_versions(registry, tmp_path / "artifacts", 1)
    registry.promote(METHOD, version, actor="test", reason="multi-node")
    camera = f"cam-{unique}"
    request = {
        "unique": unique, "camera": camera, "namespace": namespace, "bootstrap": noida_broker.bootstrap_servers,
        "redis_url": redis_server.url, "redis_password": redis_server.password,
        "cache_dir": str(tmp_path / "node-cache"),
    }  # fmt: skip
    (tmp_path / "request.json").write_text(json.dumps(request))
    run = subprocess.run(
        [sys.executable, str(SCENARIO), str(tmp_path / "request.json"), str(tmp_path / "observed.json")],
        capture_output=True, text=True, timeout=SCENARIO_TIMEOUT_S,
    )  # fmt: skip
    assert run.returncode == 0, f"scenario failed:\n{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
    observed = json.loads((tmp_path / "observed.json").read_text())
    print("scenario timeline (s):", observed["timeline"])

    head, workers, killed, joined = observed["head"], observed["workers"], observed["killed"], observed["joined"]
    survivor = next(worker for worker in workers if worker != killed)
    assert len({head, *workers, joined}) == 4  # four raylets
    assert observed["ingest_actors"] == [head, head] and observed["ingest_controller"] == [head]
    assert len(observed["replicas_before"]) == 2 and head not in observed["replicas_before"]
    assert killed in observed["replicas_before"]
    assert observed["replicas_after_kill"] == [survivor, survivor]
    assert set(observed["replicas_after_join"]) == {survivor, joined}
    # A scale-out: the two replicas on the survivor kept running, a third one started.
    assert set(observed["replica_ids_after_kill"]) < set(observed["replica_ids_after_join"])

    sent = observed["sent"]
    store = ResultStore(redis_server.client())
    assert observed["results_at_kill"] < len(sent)  # the node died mid-stream
    assert store.count_results(camera) == len(sent) and store.count_events(camera) == len(sent)
    results = [store.get_result(camera, frame_id) for frame_id in sent]
    assert all(result is not None for result in results)
    assert {result.prompt_version for result in results} == {version}  # loaded on the workers from Redis
    cached = [path.name for path in (tmp_path / "node-cache" / METHOD).iterdir()]
    assert cached == [f"{version}-{registry.resolve(METHOD, version).sha256[:16]}"]
