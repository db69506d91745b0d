"""The artifact stores that need no service: the fsspec store on ``memory://``, the choice by ``registry.root``, and
the check of an artifact's files against its record."""

from __future__ import annotations

import hashlib
import json
import pickle
import uuid
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis
from safetensors.numpy import save_file

from services.stores.artifact_store import (
    ArtifactHashError,
    ArtifactStoreError,
    CorruptArtifactError,
    FsspecArtifactStore,
    LocalDirectoryStore,
    MissingArtifactFileError,
    RedisArtifactStore,
    check_artifact,
    open_artifact_store,
    store_root_beside,
)
from zsad_core.errors import IncompatibleWeightsError

FILES = {"prompts.safetensors": b"\x00weights\xff", "manifest.json": b'{"method": "vcp-clip"}'}


@pytest.fixture
def memory_store() -> FsspecArtifactStore:
    return FsspecArtifactStore(f"memory://zsad-unit/{uuid.uuid4().hex}")


def test_fsspec_store_round_trip_and_immutability(memory_store: FsspecArtifactStore) -> None:
    assert not memory_store.taken("vcp-clip", "v1")
    location = memory_store.put("vcp-clip", "v1", FILES)
    assert location == f"{memory_store.url}/vcp-clip/v1" and memory_store.taken("vcp-clip", "v1")
    assert memory_store.location("vcp-clip", "v1") == location
    assert memory_store.read(location, tuple(FILES)) == FILES
    with pytest.raises(ArtifactStoreError) as exists:
        memory_store.put("vcp-clip", "v1", {"prompts.safetensors": b"other"})
    assert exists.value.reason == "version_exists"
    assert memory_store.read(location, tuple(FILES)) == FILES  # the refused write changed nothing
    with pytest.raises(MissingArtifactFileError, match=r"extra\.bin is missing") as missing:
        memory_store.read(location, ("extra.bin",))
    assert missing.value.reason == "missing_file"
    memory_store.discard(location)
    assert not memory_store.taken("vcp-clip", "v1")


def test_local_store_writes_read_only_files(tmp_path: Path) -> None:
    store = LocalDirectoryStore(tmp_path / "registry")
    location = store.put("vcp-clip", "v1", FILES)
    assert Path(location) == tmp_path / "registry" / "vcp-clip" / "v1" == Path(store.location("vcp-clip", "v1"))
    assert store.read(location, tuple(FILES)) == FILES
    assert all((Path(location) / name).stat().st_mode & 0o777 == 0o444 for name in FILES)
    assert [p.name for p in (tmp_path / "registry" / "vcp-clip").iterdir()] == ["v1"]  # no staging left
    with pytest.raises(ArtifactStoreError) as exists:
        store.put("vcp-clip", "v1", FILES)
    assert exists.value.reason == "version_exists"


def test_registry_root_chooses_the_store(tmp_path: Path) -> None:
    client = redis.Redis()  # never connected: choosing a store makes no request
    assert isinstance(open_artifact_store(tmp_path, client, "ns"), LocalDirectoryStore)
    assert isinstance(open_artifact_store("redis://", client, "ns"), RedisArtifactStore)
    assert isinstance(open_artifact_store("memory://bucket/prefix", client, "ns"), FsspecArtifactStore)
    assert isinstance(open_artifact_store(f"file://{tmp_path}", client, "ns"), FsspecArtifactStore)
    with pytest.raises(ArtifactStoreError, match="use exactly 'redis://'") as other_redis:
        open_artifact_store("redis://elsewhere:6379/0", client, "ns")
    assert other_redis.value.reason == "unsupported_url"
    with pytest.raises(ArtifactStoreError) as unknown:
        open_artifact_store("nosuchfs://bucket", client, "ns")
    assert unknown.value.reason == "unsupported_url"


@pytest.mark.parametrize(
    ("root", "store_type", "reference_root"),
    [
        ("runs/registry", LocalDirectoryStore, "runs/registry/references"),
        ("redis://", RedisArtifactStore, "redis://"),
        ("memory://bucket/prefix/", FsspecArtifactStore, "memory://bucket/prefix/references"),
    ],
)
def test_reference_sets_use_the_prompts_store_kind_beside_them(
    root: str, store_type: type, reference_root: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path))
    from types import SimpleNamespace

    from services.config import RegistryConfig
    from services.stores.artifact_registry import REFERENCES, reference_registry

    settings = RegistryConfig(root=root, namespace="ns", cache_dir="cache", max_redis_bytes=1234)
    registry = reference_registry(SimpleNamespace(registry=settings), redis.Redis())  # type: ignore[arg-type]
    assert store_root_beside(root, "references") == reference_root
    assert isinstance(registry.store, store_type) and registry.kind is REFERENCES
    assert (registry.namespace, registry.cache_dir) == ("ns:references", tmp_path / "cache" / "references")
    if isinstance(registry.store, RedisArtifactStore):
        assert registry.store.max_bytes == 1234


@pytest.mark.parametrize(
    "error",
    [ArtifactStoreError("version_exists", "v1 already exists"), MissingArtifactFileError("a.bin is missing"),
     ArtifactHashError("a.bin has another sha256"), CorruptArtifactError("hash_mismatch", "a.bin has another sha256")],
    ids=lambda error: type(error).__name__,
)  # fmt: skip
def test_store_errors_survive_pickling(error: ArtifactStoreError) -> None:
    """Ray hands an error raised in a worker (a training checkpoint write) to the driver pickled."""
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), copy.reason, str(copy)) == (type(error), error.reason, str(error))


FORMAT = SimpleNamespace(weights_file="w.safetensors", manifest_file="manifest.json",
                         subject_of=lambda manifest: manifest.get("extra", {}).get("camera"))  # fmt: skip


def artifact(directory: Path) -> dict[str, object]:
    """An artifact of :data:`FORMAT` in ``directory``, and the record a registry would keep of it."""
    directory.mkdir()
    save_file({"memory": np.zeros((2, 3), dtype=np.float32)}, str(directory / FORMAT.weights_file))
    sha256 = hashlib.sha256((directory / FORMAT.weights_file).read_bytes()).hexdigest()
    recorded = {"method": "cam1", "backbone": "b@64", "taps": [1, 2], "image_size": 64, "sha256": sha256,
                "schema_version": 1}  # fmt: skip
    manifest = {**{k: v for k, v in recorded.items() if k != "method"}, "extra": {"camera": "cam1"}}
    (directory / FORMAT.manifest_file).write_text(json.dumps(manifest))
    return recorded


def corrupt_reason(directory: Path, recorded: dict[str, object]) -> str:
    with pytest.raises(CorruptArtifactError) as corrupt:
        check_artifact(directory, FORMAT, recorded, "cam1 r1")
    assert isinstance(corrupt.value, IncompatibleWeightsError)  # serving handles it as weights it cannot use
    return corrupt.value.reason


def test_check_artifact_refuses_files_that_are_not_the_recorded_ones(tmp_path: Path) -> None:
    directory = tmp_path / "r1"
    recorded = artifact(directory)
    check_artifact(directory, FORMAT, recorded, "cam1 r1")  # the subject is read where the format says

    with pytest.raises(CorruptArtifactError, match=r"cam1 r1: manifest was changed: image_size: recorded 32, manifest"):
        check_artifact(directory, FORMAT, {**recorded, "image_size": 32}, "cam1 r1")
    assert corrupt_reason(directory, {**recorded, "method": "cam2"}) == "manifest_mismatch"
    save_file({"memory": np.ones((2, 3), dtype=np.float32)}, str(directory / FORMAT.weights_file))
    assert corrupt_reason(directory, recorded) == "hash_mismatch"
    garbage = b"not a safetensors file"
    (directory / FORMAT.weights_file).write_bytes(garbage)
    unreadable = {**recorded, "sha256": hashlib.sha256(garbage).hexdigest()}
    manifest = json.loads((directory / FORMAT.manifest_file).read_text())
    (directory / FORMAT.manifest_file).write_text(json.dumps({**manifest, "sha256": unreadable["sha256"]}))
    assert corrupt_reason(directory, unreadable) == "unreadable_weights"
    (directory / FORMAT.manifest_file).write_text('{"backbone": "b@64"}')
    assert corrupt_reason(directory, recorded) == "unreadable_manifest"
    (directory / FORMAT.manifest_file).write_text("{not json")
    assert corrupt_reason(directory, recorded) == "unreadable_manifest"
    (directory / FORMAT.weights_file).unlink()
    assert corrupt_reason(directory, recorded) == "missing_file"
