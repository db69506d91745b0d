"""The registry of versioned artifacts, prompt versions and reference sets: immutable copies in an artifact store;
records, aliases and audit in Redis.

Why: retraining produces new prompt artifacts (:mod:`zsad_core.artifacts`). Serving must switch to a better one
without a restart and be able to switch back, and an operator must be able to tell later who switched what and
why. The registry gives each artifact a version that never changes meaning, records what it was trained on and
how it scored, and moves the ``champion`` and ``candidate`` aliases with an audit entry and a pub/sub notice
that serving replicas listen to.

Versions are ``v<N>``, N from a Redis INCR per method: short enough for a camera's ``prompt_version``, ordered,
and unique across concurrent registrars without trusting clocks (time-based names collide within a second and
sort wrongly across hosts). A number is never reused; a failed registration leaves a gap.

Redis layout (``ns`` is the namespace, ``zsad:registry`` by default; the traffic is tiny, so no hash tags):

* ``{ns}:methods``: set of the methods that have versions.
* ``{ns}:{method}:seq``: the counter behind the version numbers.
* ``{ns}:{method}:versions``: sorted set version -> N.
* ``{ns}:{method}:version:{version}``: hash, the version's record (:meth:`RegistryEntry.to_record`).
* ``{ns}:{method}:alias:{alias}``: list, the alias's history; the last element is the current version, so a
  rollback pops it.
* ``{ns}:audit``: stream of register, promote and rollback entries, refusals included, and of what others audit
  there; trimmed to about the newest entries (:mod:`services.audit_log`).
* ``{ns}:events``: pub/sub channel, JSON ``{"method", "alias", "version", "action"}`` after each alias move.

The artifact's two files, byte for byte and never changed, live in the store ``root`` names
(:mod:`.artifact_store`, which also checks the files against a record): a local directory on one machine, the
registry's Redis (``redis://``) or an object store URL on a cluster without shared disk. A record holds the
artifact's ``location`` in that store.

Kinds: one :class:`ArtifactRegistry` holds one :class:`ArtifactKind`: :data:`PROMPTS` (the default; subject a
method, versions ``v<N>``) or :data:`REFERENCES`, the few-shot reference sets that
:mod:`services.prompt_lifecycle.reference_sets` builds (subject a camera, versions ``r<N>``). The registry of
reference sets (:func:`reference_registry`) works under its own namespace and root beside the prompts', so its
aliases, history, audit and events never mix with theirs.

Serving (:mod:`services.prompt_lifecycle.hot_swap`) resolves a camera's ``prompt_version`` and calls
:meth:`ArtifactRegistry.materialise`: a local directory holding the files (for a remote store, a copy in the node's
cache directory) after they were checked against the record; then ``zsad_core.artifacts.load_prompts`` refuses an
artifact made for another model. :meth:`ArtifactRegistry.check_serving_compatible` does both checks for a promotion
gate. """

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis

from services.audit_log import append_audit, audit_key
from services.records import CAMERA_ID_PATTERN
from services.stores.artifact_store import (
    DEFAULT_MAX_REDIS_BYTES,
    ArtifactStore,
    ArtifactStoreError,
    CorruptArtifactError,
    LocalDirectoryStore,
    check_artifact,
    check_weights,
    open_artifact_store,
    read_manifest,
    store_root_beside,
)
from zsad_core.errors import IncompatibleWeightsError, ZsadError
from zsad_core.method_names import method_names

if TYPE_CHECKING:
    from redis.client import Pipeline

    from services.config import RegistryConfig, ZsadConfig
    from zsad_core.methods.base import ZeroShotMethod

# zsad_core.artifacts imports torch (seconds to import); it is imported inside the operations that read artifact
# files, so listing, resolving and the audit stay instant for the CLI and for processes without torch.

ALIASES = ("champion", "candidate")
_CAMERA_RE = re.compile(CAMERA_ID_PATTERN)
DEFAULT_CACHE_DIR = "runs/registry-cache"


class RegistryError(ZsadError):
    """A registry operation cannot be done (unknown version or alias, nothing to roll back to, bad source)."""

    reason = "registry"


@dataclass(frozen=True)
class RegistryEntry:
    """One registered version: where its files are stored and what its manifest and registration recorded.

    ``location`` is the artifact's address in the registry's store (a directory, ``redis://...`` or a URL); use
    :meth:`ArtifactRegistry.materialise` for a local directory holding the files.

    ``metrics`` holds the numeric metrics (from the manifest's ``metrics``, then those given at registration);
    ``eval_data`` is the data set they were measured on, so metrics from different data are never compared.
    """

    method: str
    version: str
    location: str
    backbone: str
    taps: tuple[int, ...]
    image_size: int
    sha256: str
    schema_version: int
    created_at: str
    registered_at: str
    created_by: str
    training_data: str | None = None
    eval_data: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)

    def manifest_fields(self) -> dict[str, Any]:
        """The recorded values that the stored ``manifest.json`` must still hold (in its JSON types)."""
        return {
            "method": self.method,
            "backbone": self.backbone,
            "taps": list(self.taps),
            "image_size": self.image_size,
            "sha256": self.sha256,
            "schema_version": self.schema_version,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (the CLI prints these)."""
        return {**dataclasses.asdict(self), "taps": list(self.taps)}

    def to_record(self) -> dict[str, str]:
        """The Redis hash fields; ``None`` is stored as an empty string."""
        return {
            key: json.dumps(value) if key in ("taps", "metrics") else "" if value is None else str(value)
            for key, value in self.to_dict().items()
        }

    @classmethod
    def from_record(cls, record: dict[str, str]) -> RegistryEntry:
        """The inverse of :meth:`to_record`."""
        return cls(
            method=record["method"],
            version=record["version"],
            location=record["location"] if "location" in record else record["path"],  # "path": local-only records
            backbone=record["backbone"],
            taps=tuple(json.loads(record["taps"])),
            image_size=int(record["image_size"]),
            sha256=record["sha256"],
            schema_version=int(record["schema_version"]),
            created_at=record["created_at"],
            registered_at=record["registered_at"],
            created_by=record["created_by"],
            training_data=record["training_data"] or None,
            eval_data=record["eval_data"] or None,
            metrics=json.loads(record["metrics"]),
        )


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit stream operators read (``zsad registry audit``), as written under ``audit_id``.

    Every writer uses it: alias moves and their refusals (``promote``, ``rollback``), a replica's refused load
    (``serve_load``), camera settings and calibrations (``camera_set``, ``calibrate``, ...; ``alias`` is
    ``<camera>:settings`` or ``<camera>:calibration``) and score drift (``drift``). ``method`` is the subject's
    method (the camera for reference sets). ``outcome`` is ``promoted``, ``rolled_back``, ``unchanged`` (the
    alias already pointed there), ``refused``, ``applied`` or ``drifted``; a refusal has a machine-readable
    ``cause`` and a ``detail`` saying why.
    """

    action: str
    method: str
    alias: str
    from_version: str | None
    to_version: str | None
    outcome: str
    actor: str
    reason: str
    cause: str = ""
    detail: str = ""
    audit_id: str = ""

    @property
    def moved(self) -> bool:
        """Whether the alias changed."""
        return self.outcome in ("promoted", "rolled_back")

    def audit_fields(self) -> dict[str, str]:
        """The audit stream entry of this result, stamped now (``None`` versions as empty strings)."""
        fields = {key: value or "" for key, value in dataclasses.asdict(self).items() if key != "audit_id"}
        return {**fields, "ts": _now()}


class PromotionRefusedError(RegistryError):
    """A promotion or rollback was refused and the refusal audited; ``result`` is the audited refusal and
    ``reason`` its cause (``not_better``, ``no_metric``, ``incomparable``, ``hash_mismatch``, ...)."""

    def __init__(self, result: AuditEntry):
        super().__init__(
            f"{result.action} of {result.method} {result.alias} to {result.to_version} refused: {result.detail}"
        )
        self.result = result
        self.reason = result.cause


@dataclass(frozen=True)
class ArtifactKind:
    """What one registry stores: the artifact's file names, version prefix and schema, and its subject.

    Why a value and not a subclass: everything that makes the registry trustworthy (staged immutable copies,
    hash checks, aliases with history, the audit) is the same for every kind; only these facts differ.

    Attributes:
        name: ``prompts`` or ``references`` (messages).
        weights_file, manifest_file: the artifact directory's two files.
        version_prefix: a version is this prefix and a number (``v3``, ``r3``).
        schema_version: the manifest schema the registry accepts.
        subject_of: the subject an artifact is registered under (its method, its camera), read from the
            manifest; ``None`` when the manifest names none.
        check_subject: raises :class:`RegistryError` for a subject this kind cannot hold.
    """

    name: str
    weights_file: str
    manifest_file: str
    version_prefix: str
    schema_version: int
    subject_of: Callable[[dict[str, Any]], str | None]
    check_subject: Callable[[str], None]

    def is_version(self, name: str | None) -> bool:
        """Whether ``name`` is a version of this kind (not an alias, not another kind's version)."""
        return bool(name) and re.fullmatch(rf"{self.version_prefix}[1-9][0-9]*", name) is not None


def _prompt_method(manifest: dict[str, Any]) -> str | None:
    method = manifest.get("method")
    return method if isinstance(method, str) else None


def _check_method(method: str) -> None:
    known = method_names()
    if method not in known:
        raise RegistryError(f"unknown method {method!r}; methods are {known}")


PROMPTS = ArtifactKind(
    name="prompts",
    weights_file="prompts.safetensors",  # zsad_core.artifacts' names, without importing torch here
    manifest_file="manifest.json",
    version_prefix="v",
    schema_version=1,
    subject_of=_prompt_method,
    check_subject=_check_method,
)


def _camera_of(manifest: dict[str, Any]) -> str | None:
    extra = manifest.get("extra")
    camera = extra.get("camera") if isinstance(extra, dict) else None
    return camera if isinstance(camera, str) else None


def _check_camera(camera: str) -> None:
    # A camera id becomes a directory name: "." and ".." match the id pattern but would leave the registry root.
    if not _CAMERA_RE.match(camera) or camera in (".", ".."):
        raise RegistryError(f"{camera!r} is not a camera id ({CAMERA_ID_PATTERN}, not . or ..)")


REFERENCES = ArtifactKind(
    name="reference sets",
    weights_file="references.safetensors",  # zsad_core.few_shot.memory's names, without importing torch here
    manifest_file="manifest.json",
    version_prefix="r",
    schema_version=1,
    subject_of=_camera_of,
    check_subject=_check_camera,
)


def reference_registry(config: ZsadConfig, client: redis.Redis) -> ArtifactRegistry:
    """The registry of reference sets beside the prompt registry of ``config``: own store root, namespace and
    cache directory, the same store kind and size limit."""
    return ArtifactRegistry.from_config(
        config.registry,
        client,
        kind=REFERENCES,
        root=store_root_beside(config.registry.root, "references"),
        namespace=f"{config.registry.namespace}:references",
        cache_dir=Path(config.registry.cache_dir) / "references",
    )


class ArtifactRegistry:
    """Versioned, immutable artifacts of one kind (prompts or reference sets) with ``champion``/``candidate``
    aliases, audited in Redis.

    Args:
        root: where artifacts are stored: a directory, ``redis://`` or an fsspec URL (:mod:`.artifact_store`).
        client: a redis-py client (binary or decoded responses both work, except that the ``redis://`` store
            needs binary responses).
        namespace: prefix of every key and of the events channel.
        kind: what the registry holds (:data:`PROMPTS` by default); ``method`` in the API and the records is the
            kind's subject (a camera for reference sets).
        cache_dir: this machine's directory for local copies of artifacts from a remote store.
        max_redis_bytes: the largest artifact the ``redis://`` store accepts.
    """

    def __init__(
        self,
        root: str | Path,
        client: redis.Redis,
        *,
        namespace: str = "zsad:registry",
        kind: ArtifactKind = PROMPTS,
        cache_dir: str | Path = DEFAULT_CACHE_DIR,
        max_redis_bytes: int = DEFAULT_MAX_REDIS_BYTES,
    ):
        self.store: ArtifactStore = open_artifact_store(root, client, namespace, max_redis_bytes=max_redis_bytes)
        self.client = client
        self.namespace = namespace
        self.kind = kind
        self.cache_dir = Path(cache_dir)

    @classmethod
    def from_config(
        cls,
        config: RegistryConfig,
        client: redis.Redis,
        *,
        kind: ArtifactKind = PROMPTS,
        root: str | Path | None = None,
        namespace: str | None = None,
        cache_dir: str | Path | None = None,
    ) -> ArtifactRegistry:
        """The registry the ``registry`` section describes, over ``client``; ``root``, ``namespace`` and
        ``cache_dir`` override the section's (another kind lives beside the prompts, never mixed with them)."""
        return cls(
            config.root if root is None else root,
            client,
            namespace=config.namespace if namespace is None else namespace,
            kind=kind,
            cache_dir=config.cache_dir if cache_dir is None else cache_dir,
            max_redis_bytes=config.max_redis_bytes,
        )

    @property
    def audit_key(self) -> str:
        """The audit stream."""
        return audit_key(self.namespace)

    @property
    def events_channel(self) -> str:
        """The pub/sub channel announcing alias moves."""
        return f"{self.namespace}:events"

    def version_key(self, method: str, version: str) -> str:
        """The hash holding one version's record."""
        return f"{self.namespace}:{method}:version:{version}"

    def alias_key(self, method: str, alias: str) -> str:
        """The list holding an alias's history (current version last)."""
        return f"{self.namespace}:{method}:alias:{alias}"

    def _versions_key(self, method: str) -> str:
        return f"{self.namespace}:{method}:versions"

    def register(
        self,
        artifact_dir: str | Path,
        *,
        training_data: str | None = None,
        metrics: dict[str, float] | None = None,
        created_by: str,
    ) -> RegistryEntry:
        """Copy an artifact into the registry's store under a new version and record it.

        Args:
            artifact_dir: a directory written by :func:`zsad_core.artifacts.save_prompts`.
            training_data: what it was trained on; defaults to the manifest's ``training_data``.
            metrics: evaluation metrics; override the manifest's ``metrics`` of the same name.
            created_by: who registers it (audited).

        Raises:
            CorruptArtifactError: the weight file is missing, unreadable or does not hash to the manifest's sha256.
            RegistryError: the manifest names no or an unknown subject (method), or another schema version.
            ArtifactStoreError: the store refuses the artifact (e.g. ``artifact_too_large`` for ``redis://``).
        """
        kind = self.kind
        source = Path(artifact_dir)
        manifest = read_manifest(source, kind)
        check_weights(source / kind.weights_file, manifest["sha256"])
        method = kind.subject_of(manifest)
        if method is None:
            raise CorruptArtifactError("unreadable_manifest", f"{source}: the manifest names no {kind.name} subject")
        try:
            kind.check_subject(method)
        except RegistryError as exc:
            raise RegistryError(f"{source}: {exc}") from None
        if manifest["schema_version"] != kind.schema_version:
            raise RegistryError(
                f"{source}: schema version {manifest['schema_version']!r} is not {kind.schema_version}"
            )
        measured = manifest.get("metrics") if isinstance(manifest.get("metrics"), dict) else {}
        recorded = {key: float(value) for key, value in measured.items() if _is_number(value)}
        recorded.update({key: float(value) for key, value in (metrics or {}).items()})
        number, version = self._reserve(method)
        files = {name: (source / name).read_bytes() for name in (kind.weights_file, kind.manifest_file)}
        location = self.store.put(method, version, files)
        entry = RegistryEntry(
            method=method,
            version=version,
            location=location,
            backbone=manifest["backbone"],
            taps=tuple(manifest["taps"]),
            image_size=manifest["image_size"],
            sha256=manifest["sha256"],
            schema_version=manifest["schema_version"],
            created_at=str(manifest.get("created_at", "")),
            registered_at=_now(),
            created_by=created_by,
            training_data=training_data or _text_or_none(manifest.get("training_data")),
            eval_data=_text_or_none(measured.get("dataset")),
            metrics=recorded,
        )
        audit = {"action": "register", "method": method, "alias": "", "from_version": "", "to_version": entry.version,
                 "outcome": "registered", "actor": created_by, "reason": "", "cause": "", "detail": location,
                 "ts": _now()}  # fmt: skip
        try:
            self.verify(entry)  # the stored copy is what gets recorded, not the source
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.version_key(method, entry.version), mapping=entry.to_record())
                pipe.zadd(self._versions_key(method), {entry.version: number})
                pipe.sadd(f"{self.namespace}:methods", method)
                append_audit(pipe, self.namespace, audit)
                pipe.execute()
        except (redis.RedisError, CorruptArtifactError):
            self.store.discard(location)  # unrecorded files must not hold the version's name
            raise
        return entry

    def _reserve(self, method: str) -> tuple[int, str]:
        """A fresh version number and name; numbers with stored files or a record are skipped (a Redis that lost
        its counter must not make a new artifact collide with an old one)."""
        while True:
            number = int(self.client.incr(f"{self.namespace}:{method}:seq"))
            version = f"{self.kind.version_prefix}{number}"
            if not self.store.taken(method, version) and not self.client.exists(self.version_key(method, version)):
                return number, version

    def resolve(self, method: str, version_or_alias: str) -> RegistryEntry:
        """The entry of an explicit version (``v3``, ``r3``) or of the version an alias points to.

        Raises:
            RegistryError: unknown method, version or unset alias; the message lists what exists.
        """
        return self._resolve(self.client, method, version_or_alias)

    def _resolve(self, reader: redis.Redis | Pipeline, method: str, name: str) -> RegistryEntry:
        version = self._current(reader, method, name) if name in ALIASES else name
        record = reader.hgetall(self.version_key(method, version)) if self.kind.is_version(version) else {}
        if not record:
            raise RegistryError(self._unknown(method, name))
        return RegistryEntry.from_record({_text(key): _text(value) for key, value in record.items()})

    def _unknown(self, method: str, name: str) -> str:
        versions = [_text(v) for v in self.client.zrange(self._versions_key(method), 0, -1)]
        if not versions:
            methods = sorted(_text(m) for m in self.client.smembers(f"{self.namespace}:methods"))
            return f"no versions of {method!r} are registered; {self.kind.name} exist for: {methods or 'none'}"
        aliases = ", ".join(f"{alias} -> {version}" for alias, version in self.aliases(method).items()) or "none set"
        return f"{method} has no version or alias {name!r}; versions: {', '.join(versions)}; aliases: {aliases}"

    def _current(self, reader: redis.Redis | Pipeline, method: str, alias: str) -> str | None:
        value = reader.lindex(self.alias_key(method, alias), -1)
        return None if value is None else _text(value)

    def verify(self, entry: RegistryEntry) -> None:
        """Check that the stored files still are what was registered (read from the store, not from a cache).

        Raises:
            CorruptArtifactError: with reason ``missing_file``, ``unreadable_manifest``, ``manifest_mismatch``
                (the manifest differs from the record), ``hash_mismatch`` or ``unreadable_weights``.
        """
        if isinstance(self.store, LocalDirectoryStore):
            self._check(entry, Path(entry.location))
            return
        with tempfile.TemporaryDirectory(prefix="zsad-verify-") as scratch:
            self._check(entry, self._download(entry, Path(scratch) / entry.version))

    def materialise(self, entry: RegistryEntry) -> Path:
        """A local directory holding ``entry``'s files, checked against the record; what serving loads.

        Why a cache: replicas on other nodes cannot read the registrar's disk. A remote store's files are
        copied once per node into ``cache_dir/<method>/<version>-<sha256 prefix>`` (staged, then renamed), and
        checked again on every call, so a cached copy that was changed is replaced from the store.

        Raises:
            CorruptArtifactError: see :meth:`verify`.
        """
        if isinstance(self.store, LocalDirectoryStore):
            directory = Path(entry.location)
            self._check(entry, directory)
            return directory
        directory = self.cache_dir.resolve() / entry.method / f"{entry.version}-{entry.sha256[:16]}"
        if directory.is_dir():
            try:
                self._check(entry, directory)
                return directory
            except CorruptArtifactError:
                shutil.rmtree(directory, ignore_errors=True)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{entry.version}.", dir=directory.parent))
        try:
            self._check(entry, self._download(entry, staging))
            staging.chmod(0o755)
            os.rename(staging, directory)
        except OSError:  # another process of this node installed the same copy first
            shutil.rmtree(staging, ignore_errors=True)
            self._check(entry, directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory

    def _check(self, entry: RegistryEntry, directory: Path) -> None:
        """Raise unless the files in ``directory`` are the ones ``entry`` records (:func:`.check_artifact`)."""
        check_artifact(directory, self.kind, entry.manifest_fields(), f"{entry.method} {entry.version}")

    def _download(self, entry: RegistryEntry, directory: Path) -> Path:
        """Write the stored files of ``entry`` into ``directory``; store errors become corrupt-artifact errors."""
        try:
            files = self.store.read(entry.location, (self.kind.weights_file, self.kind.manifest_file))
        except ArtifactStoreError as exc:
            raise CorruptArtifactError(exc.reason, str(exc)) from exc
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (directory / name).write_bytes(data)
        return directory

    def check_serving_compatible(self, entry: RegistryEntry, method: ZeroShotMethod) -> Path:
        """The materialised directory of ``entry`` (:meth:`materialise`) after checking that it fits ``method``
        (method, backbone, taps, size).

        Serving then calls ``load_prompts(method, directory)``, which checks the file against its manifest once
        more; this check adds the comparison with the registry's record, which the files alone cannot give.

        Raises:
            CorruptArtifactError: see :meth:`verify`.
            IncompatibleWeightsError: the artifact was made for another model.
        """
        from zsad_core.artifacts import check_compatible

        directory = self.materialise(entry)
        check_compatible(method, read_manifest(directory, self.kind))
        return directory

    def promote(
        self,
        method: str,
        version: str,
        *,
        alias: str = "champion",
        actor: str,
        reason: str,
        if_better_than: str | None = None,
        metric: str = "pixel_auroc",
        serving_method: ZeroShotMethod | None = None,
        fits: Callable[[RegistryEntry], None] | None = None,
    ) -> AuditEntry:
        """Point ``alias`` at ``version`` (a version or another alias) after checking the artifact.

        Args:
            method, version: what to promote.
            alias: ``champion`` or ``candidate``.
            actor, reason: who and why (audited).
            if_better_than: a version or alias whose recorded ``metric`` the version must strictly beat (both
                measured on the same data); an unset alias has nothing to beat, so the first champion passes.
            metric: the metric compared by ``if_better_than``.
            serving_method: when given, the artifact must also fit it (:meth:`check_serving_compatible`).
            fits: when given, called with the entry; an :class:`IncompatibleWeightsError` it raises refuses the
                promotion (a reference set built for another backbone or input size than its camera's).

        Raises:
            PromotionRefusedError: corrupt or incompatible artifact, or not better; the refusal is audited and the
                alias is unchanged.
            RegistryError: unknown version or alias name.
        """
        _check_alias(alias)
        entry = self.resolve(method, version)
        base = {
            "action": "promote",
            "method": method,
            "alias": alias,
            "to_version": entry.version,
            "actor": actor,
            "reason": reason,
        }
        try:
            if serving_method is None:
                self.verify(entry)
            else:
                self.check_serving_compatible(entry, serving_method)
            if fits is not None:
                fits(entry)
        except IncompatibleWeightsError as exc:
            refusal = AuditEntry(
                **base,
                from_version=self._current(self.client, method, alias),
                outcome="refused",
                cause=exc.reason,
                detail=str(exc),
            )
            raise PromotionRefusedError(self._audited(refusal)) from exc

        def plan(pipe: Pipeline) -> AuditEntry:
            current = self._current(pipe, method, alias)
            detail = ""
            if if_better_than is not None:
                if if_better_than in ALIASES and self._current(pipe, method, if_better_than) is None:
                    detail = f"{if_better_than} is unset: nothing to beat"
                else:
                    why_not = self._why_not_better(pipe, entry, if_better_than, metric)
                    if why_not is not None:
                        return AuditEntry(
                            **base, from_version=current, outcome="refused", cause=why_not[0], detail=why_not[1]
                        )
            if current == entry.version:
                return AuditEntry(
                    **base, from_version=current, outcome="unchanged", detail=f"{alias} already is {current}"
                )
            return AuditEntry(**base, from_version=current, outcome="promoted", detail=detail)

        watched = [self.alias_key(method, name) for name in {alias, if_better_than} if name in ALIASES]
        return self._apply(watched, plan)

    def _why_not_better(
        self, reader: Pipeline, entry: RegistryEntry, reference: str, metric: str
    ) -> tuple[str, str] | None:
        """``(cause, detail)`` when ``entry`` does not strictly beat ``reference`` on ``metric``, else ``None``."""
        other = self._resolve(reader, entry.method, reference)
        label = reference if reference == other.version else f"{reference} ({other.version})"
        ours, theirs = entry.metrics.get(metric), other.metrics.get(metric)
        if ours is None:
            return "no_metric", f"{entry.version} has no recorded {metric}"
        if theirs is None:
            return "no_metric", f"{label} has no recorded {metric} to compare with"
        if entry.eval_data and other.eval_data and entry.eval_data != other.eval_data:
            return "incomparable", (
                f"{metric} of {entry.version} was measured on {entry.eval_data!r}, of {label} on {other.eval_data!r}"
            )
        if not ours > theirs:
            return "not_better", f"{metric} {ours:.4f} of {entry.version} is not above {theirs:.4f} of {label}"
        return None

    def rollback(self, method: str, *, alias: str = "champion", actor: str, reason: str) -> AuditEntry:
        """Point ``alias`` back at the version it held before its latest move.

        Raises:
            RegistryError: the alias has no earlier version.
            PromotionRefusedError: the earlier version's files are corrupt (audited; the alias is unchanged).
        """
        _check_alias(alias)

        def plan(pipe: Pipeline) -> AuditEntry:
            history = [_text(version) for version in pipe.lrange(self.alias_key(method, alias), -2, -1)]
            if len(history) < 2:
                state = f"it is {history[0]}" if history else "it is unset"
                raise RegistryError(f"{alias} of {method} has no earlier version to roll back to ({state})")
            previous, current = history
            base = {
                "action": "rollback",
                "method": method,
                "alias": alias,
                "from_version": current,
                "to_version": previous,
                "actor": actor,
                "reason": reason,
            }
            try:
                self.verify(self._resolve(pipe, method, previous))
            except CorruptArtifactError as exc:
                return AuditEntry(**base, outcome="refused", cause=exc.reason, detail=str(exc))
            return AuditEntry(**base, outcome="rolled_back")

        return self._apply([self.alias_key(method, alias)], plan)

    def _apply(self, watched: builtins.list[str], plan: Callable[[Pipeline], AuditEntry]) -> AuditEntry:
        """Decide with ``plan`` under WATCH, then move the alias, audit and publish in one MULTI; a concurrent
        change of a watched alias makes the decision stale, so redis-py's transaction retakes it."""
        decided: builtins.list[AuditEntry] = []  # the last decision: the one the executed MULTI wrote

        def move(pipe: Pipeline) -> None:
            result = plan(pipe)
            decided[:] = [result]
            pipe.multi()
            alias_key = self.alias_key(result.method, result.alias)
            if result.outcome == "promoted":
                pipe.rpush(alias_key, result.to_version)
            elif result.outcome == "rolled_back":
                pipe.rpop(alias_key)
            append_audit(pipe, self.namespace, result.audit_fields())
            if result.moved:
                pipe.publish(self.events_channel, _event(result))

        replies = self.client.transaction(move, *watched)
        (result,) = decided
        result = dataclasses.replace(result, audit_id=_text(replies[1 if result.moved else 0]))
        if result.outcome == "refused":
            raise PromotionRefusedError(result)
        return result

    def record_serving_refusal(
        self, method: str, follows: str, serving: str | None, *, actor: str, cause: str, detail: str
    ) -> AuditEntry:
        """Audit that a serving replica refused to load a version (it keeps serving the old one).

        Why here: the audit stream is where operators look after a promotion; a replica that kept the old
        prompts because the new files were corrupt or incompatible must show up next to that promotion.
        """
        result = AuditEntry(
            action="serve_load", method=method, alias=follows, from_version=serving, to_version=None,
            outcome="refused", actor=actor, reason="replica could not load the version", cause=cause, detail=detail,
        )  # fmt: skip
        return self._audited(result)

    def _audited(self, result: AuditEntry) -> AuditEntry:
        audit_id = append_audit(self.client, self.namespace, result.audit_fields())
        return dataclasses.replace(result, audit_id=_text(audit_id))

    def list(self, method: str | None = None) -> builtins.list[RegistryEntry]:
        """Registered versions of ``method`` (all methods when ``None``), by method then version number."""
        methods = [method] if method else sorted(_text(m) for m in self.client.smembers(f"{self.namespace}:methods"))
        keys = [
            self.version_key(name, _text(version))
            for name in methods
            for version in self.client.zrange(self._versions_key(name), 0, -1)
        ]
        with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hgetall(key)
            records = pipe.execute()
        return [RegistryEntry.from_record({_text(k): _text(v) for k, v in record.items()}) for record in records]

    def aliases(self, method: str) -> dict[str, str]:
        """The set aliases of ``method`` and their versions."""
        with self.client.pipeline(transaction=False) as pipe:
            for alias in ALIASES:
                pipe.lindex(self.alias_key(method, alias), -1)
            versions = pipe.execute()
        return {alias: _text(version) for alias, version in zip(ALIASES, versions, strict=True) if version is not None}

    def audit(self, n: int = 50) -> builtins.list[dict[str, str]]:
        """The ``n`` newest audit entries, newest first, each with its stream ``id``."""
        entries = self.client.xrevrange(self.audit_key, count=n)
        return [{"id": _text(i), **{_text(k): _text(v) for k, v in fields.items()}} for i, fields in entries]


def _event(result: AuditEntry) -> str:
    return json.dumps(
        {"method": result.method, "alias": result.alias, "version": result.to_version, "action": result.action}
    )


def _check_alias(alias: str) -> None:
    if alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r}; aliases are {list(ALIASES)}")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
