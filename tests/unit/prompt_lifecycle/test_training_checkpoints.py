"""Training checkpoints in the artifact stores that need no service (``memory://`` and a directory).

The ``redis://`` store is exercised by tests/integration/multinode/, where workers on several nodes share it.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from services.config import ZsadConfig
from services.prompt_lifecycle.training_checkpoints import (
    CHECKPOINT_FILES,
    STATE_FILE,
    CheckpointLocation,
    CheckpointStore,
    Progress,
)
from services.stores.artifact_store import ArtifactStoreError, FsspecArtifactStore, LocalDirectoryStore

RNGS = [{"bit_generator": "PCG64", "state": {"state": 2**100 + 1, "inc": 7}}, {"bit_generator": "PCG64"}]


def state(epoch: int) -> dict[str, object]:
    return {"method": {"prompt": torch.full((2, 3), float(epoch))}, "epoch": epoch, "steps": 4 * epoch,
            "rng": RNGS[0]}  # fmt: skip


def progress(epochs: int) -> Progress:
    return Progress(history=[{"epoch": e, "loss": 1.0 / e, "steps": 4 * e} for e in range(1, epochs + 1)], starts=[0])


@pytest.fixture
def memory_store() -> FsspecArtifactStore:
    return FsspecArtifactStore(f"memory://zsad-unit/{uuid.uuid4().hex}")


def test_the_latest_complete_epoch_is_found_and_read_back(memory_store: FsspecArtifactStore) -> None:
    checkpoints = CheckpointStore(memory_store, "run-a")
    assert checkpoints.latest(5) is None
    for epoch in (1, 2):
        location = checkpoints.save(state(epoch), progress(epoch), RNGS)
        assert location == memory_store.location("run-a", f"epoch-{epoch}")

    latest = checkpoints.latest(5)
    assert latest is not None and latest.epoch == 2 and latest.location == location
    assert torch.equal(latest.state["method"]["prompt"], torch.full((2, 3), 2.0))  # type: ignore[index]
    assert latest.state["steps"] == 8 and latest.progress == progress(2) and latest.data_rngs == RNGS
    earlier = checkpoints.latest(1)  # a re-run asked for fewer epochs ends at its own last one
    assert earlier is not None and earlier.epoch == 1
    assert CheckpointStore(memory_store, "run-b").latest(5) is None  # runs do not see each other's


def test_an_epoch_is_written_once(memory_store: FsspecArtifactStore) -> None:
    checkpoints = CheckpointStore(memory_store, "run")
    checkpoints.save(state(1), progress(1), RNGS)
    with pytest.raises(ArtifactStoreError) as exists:
        checkpoints.save(state(1), progress(1), RNGS)
    assert exists.value.reason == "version_exists"


def test_a_cut_short_write_is_skipped_and_removed_so_the_epoch_can_be_written_again(
    memory_store: FsspecArtifactStore,
) -> None:
    checkpoints = CheckpointStore(memory_store, "run")
    checkpoints.save(state(1), progress(1), RNGS)
    memory_store.put("run", "epoch-2", {STATE_FILE: b"only the first file made it"})

    latest = checkpoints.latest(3)
    assert latest is not None and latest.epoch == 1
    assert not memory_store.taken("run", "epoch-2")
    checkpoints.save(state(2), progress(2), RNGS)
    latest = checkpoints.latest(3)
    assert latest is not None and latest.epoch == 2


def test_a_directory_store_holds_each_epoch_as_its_files(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(LocalDirectoryStore(tmp_path), "run")
    location = checkpoints.save(state(1), progress(1), RNGS)
    assert Path(location) == tmp_path / "run" / "epoch-1"
    assert sorted(path.name for path in Path(location).iterdir()) == sorted(CHECKPOINT_FILES)


@pytest.mark.parametrize(
    ("root", "expected"),
    [("redis://", "redis://"), ("s3://bucket/zsad/", "s3://bucket/zsad/checkpoints"), ("registry", None)],
)
def test_checkpoints_live_beside_the_registry(root: str, expected: str | None, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:  # fmt: skip
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path))  # a relative root lies in the state home
    config = ZsadConfig(cameras={"cam1": {"method": "vcp-clip", "class_name": "bottle", "threshold": 0.5}},
                        registry={"root": root, "namespace": "ns", "max_redis_bytes": 1234})  # fmt: skip
    location = CheckpointLocation.from_config(config, "run")
    # A directory becomes absolute on the driver: a worker's working directory is not the driver's.
    assert location.root == (expected or str(tmp_path / "registry" / "checkpoints"))
    assert (location.namespace, location.max_redis_bytes, location.run_name) == ("ns:checkpoints", 1234, "run")
