"""The prompt registry against a real redis-server, with tiny-backbone VCP-CLIP artifacts.

Each test works in its own namespace and directory, so tests sharing the session's Redis never see each other.
"""

from __future__ import annotations

import itertools
import json
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import torch
import yaml

from services.audit_log import AUDIT_MAX_ENTRIES, audit_key
from services.cli.main import main
from services.local_stack.service_processes import RedisServer
from services.stores.artifact_registry import ArtifactRegistry, PromotionRefusedError, RegistryError
from services.stores.artifact_store import ArtifactStoreError, CorruptArtifactError, RedisArtifactStore
from zsad_core.artifacts import MANIFEST_FILE, WEIGHTS_FILE, save_prompts, sha256_file
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.methods import load_method
from zsad_core.methods.base import ZeroShotMethod

pytestmark = pytest.mark.integration
METHOD = "vcp-clip"

MakeArtifact = Callable[..., Path]


@pytest.fixture(scope="module")
def method(tiny_backbone) -> ZeroShotMethod:
    return load_method(METHOD, backbone=tiny_backbone)


@pytest.fixture
def make_artifact(method: ZeroShotMethod, tmp_path: Path) -> MakeArtifact:
    """Writes a new artifact (distinct weights each time) with an optional recorded pixel AUROC."""
    count = itertools.count()

    def make(pixel_auroc: float | None = None) -> Path:
        with torch.no_grad():
            for parameter in method.trainable_parameters():
                parameter.add_(0.01 * torch.randn_like(parameter))
        extra: dict[str, object] = {"training_data": "synthetic"}
        if pixel_auroc is not None:
            extra["metrics"] = {"dataset": "synthetic:classes=2", "pixel_auroc": pixel_auroc}
        return save_prompts(method, tmp_path / "artifacts" / f"a{next(count)}", extra)

    return make


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


@pytest.fixture
def namespace(unique: str) -> str:
    return f"test:{unique}:registry"


@pytest.fixture
def registry(tmp_path: Path, client: redis.Redis, namespace: str) -> ArtifactRegistry:
    return ArtifactRegistry(tmp_path / "registry", client, namespace=namespace)


def next_message(pubsub: redis.client.PubSub, timeout_s: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None:
            return json.loads(message["data"])
    raise AssertionError("no registry event was published")


def writable(path: Path) -> Path:
    """Registered files are read-only; the tests that damage them must say so first."""
    path.chmod(stat.S_IRUSR | stat.S_IWUSR)
    return path


def test_register_resolve_promote_audit_and_publish(registry, make_artifact, method, client, namespace) -> None:
    source = make_artifact(pixel_auroc=0.71)
    entry = registry.register(source, created_by="alice")
    assert entry.version == "v1" and entry.method == METHOD
    assert Path(entry.location) == registry.store.root / METHOD / "v1"
    assert entry.backbone == "zsad-tiny-vit@64" and entry.image_size == 64 and entry.taps == (1, 2, 3, 4)
    assert entry.metrics == {"pixel_auroc": 0.71} and entry.eval_data == "synthetic:classes=2"
    assert entry.training_data == "synthetic" and entry.created_by == "alice"
    for name in (WEIGHTS_FILE, MANIFEST_FILE):
        assert (Path(entry.location) / name).read_bytes() == (source / name).read_bytes()
        assert stat.S_IMODE((Path(entry.location) / name).stat().st_mode) == 0o444
    record = client.hgetall(f"{namespace}:{METHOD}:version:v1")
    assert record[b"sha256"].decode() == json.loads((source / MANIFEST_FILE).read_text())["sha256"]
    assert json.loads(record[b"metrics"]) == {"pixel_auroc": 0.71}
    assert client.zrange(f"{namespace}:{METHOD}:versions", 0, -1) == [b"v1"]
    assert registry.resolve(METHOD, "v1") == entry
    assert registry.list() == [entry] and registry.list(METHOD) == [entry]
    registry.verify(entry)
    registry.check_serving_compatible(entry, method)

    with client.pubsub() as pubsub:
        pubsub.subscribe(registry.events_channel)
        assert pubsub.get_message(timeout=5.0)["type"] == "subscribe"
        result = registry.promote(METHOD, "v1", actor="alice", reason="first model")
        assert next_message(pubsub) == {"method": METHOD, "alias": "champion", "version": "v1", "action": "promote"}
    assert (result.outcome, result.from_version, result.to_version) == ("promoted", None, "v1")
    assert registry.aliases(METHOD) == {"champion": "v1"}
    assert registry.resolve(METHOD, "champion") == entry
    latest = registry.audit(1)[0]
    assert latest["id"] == result.audit_id
    assert {k: latest[k] for k in ("action", "method", "alias", "from_version", "to_version", "actor", "outcome")} == {
        "action": "promote", "method": METHOD, "alias": "champion", "from_version": "", "to_version": "v1",
        "actor": "alice", "outcome": "promoted",
    }  # fmt: skip
    assert latest["reason"] == "first model" and latest["ts"]
    assert [item["action"] for item in registry.audit()] == ["promote", "register"]
    again = registry.promote(METHOD, "champion", actor="alice", reason="no-op")
    assert again.outcome == "unchanged" and registry.aliases(METHOD) == {"champion": "v1"}


def test_unknown_names_list_what_exists(registry, make_artifact) -> None:
    with pytest.raises(RegistryError, match=r"no versions of 'vcp-clip' are registered"):
        registry.resolve(METHOD, "v1")
    registry.register(make_artifact(), created_by="bob")
    registry.promote(METHOD, "v1", actor="bob", reason="")
    with pytest.raises(RegistryError, match=r"no version or alias 'v7'; versions: v1; aliases: champion -> v1"):
        registry.resolve(METHOD, "v7")
    with pytest.raises(RegistryError, match="no version or alias 'candidate'"):
        registry.resolve(METHOD, "candidate")
    with pytest.raises(RegistryError, match="unknown alias 'best'"):
        registry.promote(METHOD, "v1", alias="best", actor="bob", reason="")


def test_if_better_than_refuses_a_worse_candidate(registry, make_artifact) -> None:
    for auroc in (0.80, 0.75, 0.90):
        registry.register(make_artifact(pixel_auroc=auroc), created_by="ci")
    registry.register(make_artifact(), created_by="ci")  # v4: no metrics
    first = registry.promote(METHOD, "v1", actor="ci", reason="bootstrap", if_better_than="champion")
    assert first.outcome == "promoted" and "nothing to beat" in first.detail
    with pytest.raises(PromotionRefusedError, match="not above") as refused:
        registry.promote(METHOD, "v2", actor="ci", reason="retrained", if_better_than="champion")
    assert refused.value.reason == "not_better"
    assert registry.aliases(METHOD) == {"champion": "v1"}
    audit = registry.audit(1)[0]
    assert audit["id"] == refused.value.result.audit_id
    assert (audit["outcome"], audit["cause"], audit["to_version"]) == ("refused", "not_better", "v2")
    assert "pixel_auroc 0.7500 of v2 is not above 0.8000 of champion (v1)" in audit["detail"]
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(METHOD, "v4", actor="ci", reason="", if_better_than="champion")
    assert refused.value.reason == "no_metric"
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(METHOD, "v1", actor="ci", reason="", if_better_than="champion")
    assert refused.value.reason == "not_better"  # equal is not better
    better = registry.promote(METHOD, "v3", actor="ci", reason="retrained", if_better_than="champion")
    assert (better.outcome, better.from_version, better.to_version) == ("promoted", "v1", "v3")


def flip_byte(entry_path: Path) -> None:
    weights = writable(entry_path / WEIGHTS_FILE)
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF
    weights.write_bytes(bytes(data))


def truncate(entry_path: Path) -> None:
    weights = writable(entry_path / WEIGHTS_FILE)
    weights.write_bytes(weights.read_bytes()[:-100])


def delete(entry_path: Path) -> None:
    (entry_path / WEIGHTS_FILE).unlink()


def other_backbone_in_manifest(entry_path: Path) -> None:
    manifest_path = writable(entry_path / MANIFEST_FILE)
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**manifest, "backbone": "ViT-B-16@224"}))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_byte, "hash_mismatch"),
        (truncate, "hash_mismatch"),
        (delete, "missing_file"),
        (other_backbone_in_manifest, "manifest_mismatch"),
    ],
)
def test_damaged_artifacts_are_refused_and_audited(registry, make_artifact, damage, reason) -> None:
    registry.register(make_artifact(pixel_auroc=0.5), created_by="ci")
    registry.promote(METHOD, "v1", actor="ci", reason="")
    candidate = registry.register(make_artifact(pixel_auroc=0.9), created_by="ci")
    damage(Path(candidate.location))
    with pytest.raises(CorruptArtifactError) as corrupt:
        registry.verify(candidate)
    assert corrupt.value.reason == reason
    assert isinstance(corrupt.value, IncompatibleWeightsError)  # serving handles it as weights it cannot use
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(METHOD, "v2", actor="ci", reason="looks better")
    assert refused.value.reason == reason
    assert registry.aliases(METHOD) == {"champion": "v1"}
    audit = registry.audit(1)[0]
    assert (audit["outcome"], audit["cause"], audit["from_version"], audit["to_version"]) == (
        "refused", reason, "v1", "v2",
    )  # fmt: skip


def test_artifact_for_another_backbone_is_refused_for_serving(registry, make_artifact, method) -> None:
    source = make_artifact()
    manifest_path = source / MANIFEST_FILE
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "backbone": "ViT-B-16@224"}))
    entry = registry.register(source, created_by="ci")  # intact, just made for another model
    registry.verify(entry)
    with pytest.raises(IncompatibleWeightsError, match="backbone: artifact 'ViT-B-16@224'"):
        registry.check_serving_compatible(entry, method)
    with pytest.raises(PromotionRefusedError) as refused:
        registry.promote(METHOD, entry.version, actor="ci", reason="", serving_method=method)
    assert refused.value.reason == "incompatible_weights"
    assert registry.aliases(METHOD) == {}
    assert registry.audit(1)[0]["cause"] == "incompatible_weights"


def test_bad_sources_are_not_registered(registry, make_artifact, client, namespace) -> None:
    source = make_artifact()
    weights = source / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(CorruptArtifactError, match="sha256") as corrupt:
        registry.register(source, created_by="ci")
    assert corrupt.value.reason == "hash_mismatch"
    manifest_path = source / MANIFEST_FILE
    manifest_path.write_text(json.dumps({**json.loads(manifest_path.read_text()), "sha256": sha256_file(weights)}))
    with pytest.raises(CorruptArtifactError, match="safetensors") as corrupt:
        registry.register(source, created_by="ci")  # the hash matches a file that was truncated before hashing
    assert corrupt.value.reason == "unreadable_weights"
    with pytest.raises(CorruptArtifactError) as corrupt:
        registry.register(source.parent / "nothing-here", created_by="ci")
    assert corrupt.value.reason == "missing_file"
    assert registry.list() == [] and not (registry.store.root / METHOD).exists()
    assert client.exists(registry.audit_key) == 0


def test_rollback_restores_the_previous_champion(registry, make_artifact, client) -> None:
    for _ in range(3):
        registry.register(make_artifact(), created_by="ci")
    with pytest.raises(RegistryError, match=r"no earlier version to roll back to \(it is unset\)"):
        registry.rollback(METHOD, actor="ops", reason="")
    for version in ("v1", "v2", "v3"):
        registry.promote(METHOD, version, actor="ci", reason="")
    with client.pubsub() as pubsub:
        pubsub.subscribe(registry.events_channel)
        assert pubsub.get_message(timeout=5.0)["type"] == "subscribe"
        result = registry.rollback(METHOD, actor="ops", reason="false alarms on cam2")
        assert next_message(pubsub) == {"method": METHOD, "alias": "champion", "version": "v2", "action": "rollback"}
    assert (result.outcome, result.from_version, result.to_version) == ("rolled_back", "v3", "v2")
    assert registry.aliases(METHOD) == {"champion": "v2"}
    audit = registry.audit(1)[0]
    assert (audit["action"], audit["actor"], audit["reason"]) == ("rollback", "ops", "false alarms on cam2")
    flip_byte(Path(registry.resolve(METHOD, "v1").location))
    with pytest.raises(PromotionRefusedError) as refused:
        registry.rollback(METHOD, actor="ops", reason="")
    assert refused.value.reason == "hash_mismatch" and registry.aliases(METHOD) == {"champion": "v2"}
    registry.promote(METHOD, "v3", alias="candidate", actor="ci", reason="")
    assert registry.aliases(METHOD) == {"champion": "v2", "candidate": "v3"}
    with pytest.raises(RegistryError, match=r"candidate of vcp-clip has no earlier version .* \(it is v3\)"):
        registry.rollback(METHOD, alias="candidate", actor="ops", reason="")


def test_versions_are_immutable(registry, make_artifact) -> None:
    source = make_artifact()
    first = registry.register(source, created_by="ci")
    before = {name: ((Path(first.location) / name).read_bytes(), (Path(first.location) / name).stat().st_mtime_ns)
              for name in (WEIGHTS_FILE, MANIFEST_FILE)}  # fmt: skip
    second = registry.register(source, created_by="ci")
    assert (first.version, second.version) == ("v1", "v2") and first.location != second.location
    assert second.sha256 == first.sha256
    after = {name: ((Path(first.location) / name).read_bytes(), (Path(first.location) / name).stat().st_mtime_ns)
             for name in (WEIGHTS_FILE, MANIFEST_FILE)}  # fmt: skip
    assert after == before
    (registry.store.root / METHOD / "v3").mkdir()  # files left by a registry whose Redis lost its counter
    third = registry.register(source, created_by="ci")
    assert third.version == "v4" and not any((registry.store.root / METHOD / "v3").iterdir())
    assert sorted(p.name for p in (registry.store.root / METHOD).iterdir()) == ["v1", "v2", "v3", "v4"]  # no staging
    assert [entry.version for entry in registry.list(METHOD)] == ["v1", "v2", "v4"]


def test_cli_round_trip(tmp_path, redis_server, make_artifact, namespace, capsys) -> None:
    config = tmp_path / "zsad.yaml"
    config.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {"cam1": {"method": METHOD, "class_name": "bottle", "threshold": 0.5}},
        "registry": {"root": str(tmp_path / "cli-registry"), "namespace": namespace},
    }))  # fmt: skip
    common = ["--config", str(config)]

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([*argv, *common])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert run("registry", "add", str(make_artifact(pixel_auroc=0.8)), "--actor", "alice")[:2] == (
        0, f"registered {METHOD} v1: {tmp_path / 'cli-registry' / METHOD / 'v1'}\n",
    )  # fmt: skip
    assert run("registry", "add", str(make_artifact(pixel_auroc=0.6)), "--training-data", "cam1 week 3")[0] == 0
    assert run("promote", METHOD, "v1", "--reason", "first", "--actor", "alice")[:2] == (
        0, f"{METHOD} champion: - -> v1 [promoted]\n",
    )  # fmt: skip
    code, _, err = run("promote", METHOD, "v2", "--if-better-than", "champion", "--metric", "pixel_auroc")
    assert code == 2 and "zsad: error (not_better)" in err
    assert run("promote", METHOD, "v2", "--alias", "candidate")[0] == 0
    code, out, _ = run("registry", "list", "--method", METHOD)
    lines = out.splitlines()
    assert len(lines) == 2 and "champion" in lines[0] and "candidate" in lines[1] and "pixel_auroc=0.6000" in lines[1]
    code, out, _ = run("registry", "show", METHOD, "candidate")
    shown = json.loads(out)
    assert code == 0 and shown["version"] == "v2" and shown["verified"] == "ok" and shown["aliases"] == ["candidate"]
    assert shown["training_data"] == "cam1 week 3"
    assert run("promote", METHOD, "candidate", "--reason", "manual override")[0] == 0
    assert run("rollback", METHOD, "--reason", "worse on the line", "--actor", "bob")[:2] == (
        0, f"{METHOD} champion: v2 -> v1 [rolled_back]\n",
    )  # fmt: skip
    code, out, _ = run("registry", "audit", "-n", "3")
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert "rollback" in lines[0] and "by bob: worse on the line" in lines[0]
    assert "promote" in lines[1] and "manual override" in lines[1]
    code, _, err = run("registry", "show", METHOD, "v9")
    assert code == 2 and "no version or alias 'v9'" in err


@pytest.fixture(params=["redis", "memory"])
def remote_registry(request, tmp_path: Path, client: redis.Redis, namespace: str) -> ArtifactRegistry:
    """A registry whose artifacts live in Redis or in an fsspec memory filesystem, never in a shared directory."""
    root = "redis://" if request.param == "redis" else f"memory://{namespace.replace(':', '/')}"
    return ArtifactRegistry(root, client, namespace=namespace, cache_dir=tmp_path / "node-cache")


def test_remote_store_is_materialised_into_the_node_cache(remote_registry, make_artifact, method, tmp_path) -> None:
    source = make_artifact(pixel_auroc=0.7)
    entry = remote_registry.register(source, created_by="ci")
    assert entry.version == "v1" and not (tmp_path / "node-cache").exists()  # nothing written to local disk
    assert entry.location.startswith(("redis://", "memory://"))
    directory = remote_registry.check_serving_compatible(entry, method)
    assert directory.parent == (tmp_path / "node-cache" / METHOD).resolve()
    for name in (WEIGHTS_FILE, MANIFEST_FILE):
        assert (directory / name).read_bytes() == (source / name).read_bytes()
    flip_byte(directory)  # a damaged cached copy is replaced from the store
    assert remote_registry.materialise(entry) == directory
    assert (directory / WEIGHTS_FILE).read_bytes() == (source / WEIGHTS_FILE).read_bytes()
    assert remote_registry.promote(METHOD, "v1", actor="ci", reason="").outcome == "promoted"


def test_remote_store_refuses_changed_bytes(remote_registry, make_artifact, client) -> None:
    source = make_artifact()
    entry = remote_registry.register(source, created_by="ci")
    weights = bytearray((source / WEIGHTS_FILE).read_bytes())
    weights[-1] ^= 0xFF
    store = remote_registry.store
    if isinstance(store, RedisArtifactStore):
        digest = client.hget(entry.location.removeprefix("redis://"), WEIGHTS_FILE)
        client.set(f"{remote_registry.namespace}:blob:{digest.decode()}", bytes(weights))
    else:
        store.fs.pipe_file(f"{store.base}/{METHOD}/v1/{WEIGHTS_FILE}", bytes(weights))
    with pytest.raises(CorruptArtifactError) as corrupt:
        remote_registry.materialise(entry)
    assert corrupt.value.reason == "hash_mismatch"
    with pytest.raises(PromotionRefusedError) as refused:
        remote_registry.promote(METHOD, "v1", actor="ci", reason="")
    assert refused.value.reason == "hash_mismatch"
    with pytest.raises(ArtifactStoreError) as exists:
        store.put(METHOD, "v1", {WEIGHTS_FILE: b"other"})
    assert exists.value.reason == "version_exists"


def test_redis_store_caps_the_artifact_size(make_artifact, client, namespace, tmp_path) -> None:
    source = make_artifact()
    size = sum((source / name).stat().st_size for name in (WEIGHTS_FILE, MANIFEST_FILE))
    registry = ArtifactRegistry("redis://", client, namespace=namespace, max_redis_bytes=size - 1)
    with pytest.raises(ArtifactStoreError, match=f"{size} bytes exceed .* limit of {size - 1}") as too_large:
        registry.register(source, created_by="ci")
    assert too_large.value.reason == "artifact_too_large"
    assert registry.list() == [] and client.keys(f"{namespace}:*blob*") == []
    exact = ArtifactRegistry("redis://", client, namespace=namespace, max_redis_bytes=size)
    assert exact.register(source, created_by="ci").version == "v2"  # v1 was reserved by the refused attempt


def test_redis_store_needs_a_binary_client(redis_server: RedisServer, namespace: str) -> None:
    with redis_server.client(decode_responses=True) as text_client, pytest.raises(ArtifactStoreError) as refused:
        ArtifactRegistry("redis://", text_client, namespace=namespace)
    assert refused.value.reason == "text_client"


def test_the_audit_stream_keeps_about_its_newest_entries(registry, client, namespace) -> None:
    stream = audit_key(namespace)
    with client.pipeline(transaction=False) as pipe:  # what a long-running system has written so far
        for index in range(AUDIT_MAX_ENTRIES + 500):
            pipe.xadd(stream, {"action": "drift", "n": str(index)})
        pipe.execute()
    registry.record_serving_refusal(METHOD, "champion", "v1", actor="replica-1", cause="corrupt", detail="bad hash")
    node = 100  # Redis trims whole stream nodes: up to one node's entries (stream-node-max-entries) stay beyond
    assert AUDIT_MAX_ENTRIES <= client.xlen(stream) < AUDIT_MAX_ENTRIES + node
    (newest,) = client.xrevrange(stream, count=1)
    assert newest[1][b"action"] == b"serve_load"
