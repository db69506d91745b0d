"""``zsad train`` on a real local Ray: two data-parallel CPU workers, recovery from an injected failure, and
registration in a real Redis, all with the tiny random-weight backbone and synthetic textures.

Training data and held-out data are different texture families (woven+wood vs stone+disc), as in the papers'
cross-dataset protocol. One local Ray serves the whole module. The checkpoints go to the directory store beside
each test's registry (the one-machine setting); tests/integration/multinode/ runs them through ``redis://``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from ray import cloudpickle

from services.cli.main import main
from services.local_stack.service_processes import RedisServer
from services.prompt_lifecycle.training_checkpoints import CHECKPOINT_FILES, CheckpointLocation
from services.prompt_lifecycle.training_job import EpochEnd, TrainJobSpec, run_training
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.result_store import connect
from zsad_core.artifacts import load_prompts
from zsad_core.methods import load_method

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TINY = {"backbone": "zsad-tiny-vit", "pretrained": False, "image_size": 64}
TRAIN_DATA = "synthetic:classes=woven+wood,per_class=6,size=64"
EVAL_DATA = "synthetic:seed=7,classes=stone+disc,per_class=4,size=64"


# The Ray Train workers need this module's callback class; they get it by value, not by importing tests/.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@dataclass(frozen=True)
class FailOnceAfterEpoch:
    """Rank 0 raises right after reporting ``epoch`` in an attempt that started from scratch, so the restarted
    attempt resumes from that epoch's checkpoint and finishes."""

    epoch: int

    def __call__(self, finished: EpochEnd) -> None:
        if finished.epoch == self.epoch and finished.rank == 0 and finished.attempt_start == 0:
            raise RuntimeError(f"injected failure after reporting epoch {finished.epoch}")


@pytest.fixture(scope="module", autouse=True)
def _on_local_ray(local_ray: str) -> None:
    """Every test here runs its job on the session's local Ray."""


def spec(tmp_path: Path, name: str, **fields: object) -> TrainJobSpec:
    defaults = {"method": "vcp-clip", **TINY, "train_data": TRAIN_DATA, "eval_data": EVAL_DATA, "epochs": 2,
                "batch_size": 3, "seed": 1, "storage_path": tmp_path / "runs", "name": name}
    return TrainJobSpec(**{**defaults, **fields})


def checkpoint_dirs(tmp_path: Path, job: TrainJobSpec) -> list[str]:
    return sorted(path.name for path in (tmp_path / "registry" / "checkpoints" / job.run_name).iterdir())


def yaml_config(tmp_path: Path, redis_server: RedisServer, namespace: str) -> Path:
    """The configuration of ``config`` plus a real Redis, as a file for ``zsad train --config``."""
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {"cam1": {"method": "vcp-clip", "class_name": "bottle", "threshold": 0.5}},
        "registry": {"root": str(tmp_path / "registry"), "namespace": namespace},
    }))  # fmt: skip
    return path


@pytest.mark.takes_long(
    reason="two Ray Train fits (a failing one with its resumption, then a rerun by name through the CLI), three"
    " worker groups started"
)
def test_two_workers_checkpoint_resume_after_a_failure_write_a_loadable_artifact_and_a_cli_rerun_registers(
    tmp_path: Path, redis_server: RedisServer, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two Ray Train fits on two workers: a failing one and its resumption, then ``zsad train`` with the same name.

    The first fit's outcome is checked as any fit's (checkpoints, per-rank data RNGs, the artifact, its metrics and
    the baseline's) and as a resumed one's; the second is the CLI's, so one rerun checks both that a rerun resumes
    by name and that the CLI registers the artifact and points candidate at it. Each fit starts a controller and
    two workers that import torch: one fit for each of these would cost half a minute of CPU more.
    """
    from services.config import load_config

    namespace = f"test:{unique}:registry"
    config_path = yaml_config(tmp_path, redis_server, namespace)
    job = spec(tmp_path, "resumed", workers=2, epochs=3)
    outcome = run_training(job, load_config(config_path), epoch_callbacks=[FailOnceAfterEpoch(1)])

    assert outcome.attempt_starts == [0, 1]  # the first attempt failed, the second started from epoch 1
    # 12 samples, 6 per rank, batches of 3: 2 steps per epoch on each rank (one worker alone would take 4).
    assert [(log["epoch"], log["steps"]) for log in outcome.history] == [(1, 2), (2, 4), (3, 6)]
    assert outcome.epochs_done == 3 and checkpoint_dirs(tmp_path, job) == ["epoch-1", "epoch-2", "epoch-3"]
    assert outcome.registry_version is None  # nothing registered without register_artifact
    assert not list(job.run_dir.glob("checkpoint_*")), "Ray Train's own storage holds no checkpoint"
    location = CheckpointLocation.from_config(load_config(config_path), job.run_name)
    with location.open() as store:
        latest = store.latest(3)
    assert latest is not None and latest.location == outcome.checkpoint_location
    assert {path.name for path in Path(latest.location).iterdir()} == set(CHECKPOINT_FILES)
    # rank 0's trainer state plus each rank's own data RNG, which differ (seeded by rank)
    assert len(latest.data_rngs) == 2 and latest.data_rngs[0] == latest.state["rng"] != latest.data_rngs[1]

    fresh = load_method("vcp-clip", **TINY)
    untrained = {key: value.clone() for key, value in fresh.state_dict().items()}
    manifest = load_prompts(fresh, outcome.artifact_dir)
    final = latest.state["method"]
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in final.items())
    assert any(not torch.equal(untrained[key], value) for key, value in final.items())
    assert manifest["ray_run_name"] == "resumed" and manifest["training_data"] == TRAIN_DATA
    assert manifest["metrics"] == outcome.metrics and outcome.metrics["dataset"] == EVAL_DATA
    assert 0.0 <= outcome.metrics["pixel_auroc"] <= 1.0
    assert 0.0 <= outcome.baseline_metrics["pixel_auroc"] <= 1.0

    # The same run (name, data, batch size, seed, workers) with one more epoch, from the CLI, registered.
    capsys.readouterr()
    code = main(["train", "--method", "vcp-clip", "--backbone", "zsad-tiny-vit", "--random-weights", "--image-size",
                 "64", "--train-data", TRAIN_DATA, "--eval-data", EVAL_DATA, "--epochs", "4", "--batch-size", "3",
                 "--seed", "1", "--workers", "2", "--name", "resumed", "--storage", str(tmp_path / "runs"),
                 "--no-baseline", "--register", "--config", str(config_path)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "registered vcp-clip v1; alias candidate -> v1" in out
    assert "run resumed: 4 epochs; attempts started at epochs [0, 1, 3]; " in out  # resumed by name from epoch 3
    assert checkpoint_dirs(tmp_path, job) == ["epoch-1", "epoch-2", "epoch-3", "epoch-4"]

    with connect(load_config(config_path).redis) as client:
        registry = ArtifactRegistry(tmp_path / "registry", client, namespace=namespace)
        entry = registry.resolve("vcp-clip", "candidate")
        registry.verify(entry)
        audit = registry.audit(5)
    [written] = [Path(line.split(" to ", 1)[1]) for line in out.splitlines() if line.startswith("artifact written to ")]
    assert written != outcome.artifact_dir  # artifacts are immutable: each run writes a new one
    assert [log["epoch"] for log in json.loads((written / "manifest.json").read_text())["history"]] == [1, 2, 3, 4]
    manifest = json.loads((Path(entry.location) / "manifest.json").read_text())
    assert entry.version == "v1" and entry.training_data == TRAIN_DATA and entry.eval_data == EVAL_DATA
    assert entry.metrics["pixel_auroc"] == manifest["metrics"]["pixel_auroc"]
    assert entry.created_by == "zsad-train:resumed"
    assert [(item["action"], item["alias"], item["to_version"]) for item in audit[:2]] == [
        ("promote", "candidate", "v1"), ("register", "", "v1")]
