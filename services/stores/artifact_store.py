"""Where the artifact registry keeps artifact files: a local directory, Redis, or an fsspec object store.

Why three: a local directory only works while every replica sees the same disk (one machine, or a shared volume).
On a Ray cluster of several nodes the replicas need a store every node can reach. Prompt artifacts are small
(kilobytes to a few MiB), so the registry's own Redis can hold them, with no extra service to run; production
object stores (``s3://``, ``gs://``, ...) are reached through fsspec. The choice is made by ``registry.root``:

* a path (``runs/registry``): :class:`LocalDirectoryStore`, files under ``root/<method>/<version>/``;
* ``redis://``: :class:`RedisArtifactStore`, in the registry's Redis;
* any other URL (``file://``, ``memory://``, ``s3://bucket/prefix``): :class:`FsspecArtifactStore`.

Every store is write-once per version: :meth:`put` refuses a version that already has files. Reads hand back the
bytes; :func:`check_artifact` checks them against the registry's record (the manifest's fields, the weights' sha256
and safetensors header) before anything is loaded, and :func:`read_manifest` and :func:`check_weights` check an
artifact before it is stored.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import redis
from safetensors import SafetensorError, safe_open

from zsad_core.errors import IncompatibleWeightsError, ZsadError

REDIS_ROOT = "redis://"
DEFAULT_MAX_REDIS_BYTES = 16 * 1024 * 1024
_REQUIRED_MANIFEST_KEYS = ("backbone", "taps", "image_size", "sha256", "schema_version")


class ArtifactStoreError(ZsadError):
    """An artifact store cannot be used as configured, or refuses a write (``reason`` says which)."""

    reason = "artifact_store"

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self) -> tuple[object, tuple[type[ArtifactStoreError], str, str]]:
        """Pickle by reason and message: a store used in a Ray worker raises there, and Ray pickles the error
        for the driver; the default (``cls(*args)``) would call this ``__init__`` without its reason."""
        return _rebuild_error, (type(self), self.reason, str(self))


def _rebuild_error(cls: type[ArtifactStoreError], reason: str, message: str) -> ArtifactStoreError:
    error = cls.__new__(cls)
    ArtifactStoreError.__init__(error, reason, message)
    return error


class MissingArtifactFileError(ArtifactStoreError):
    """A recorded artifact file is not in the store."""

    def __init__(self, message: str):
        super().__init__("missing_file", message)


class ArtifactHashError(ArtifactStoreError):
    """Bytes read from a content-addressed store do not hash to their address."""

    def __init__(self, message: str):
        super().__init__("hash_mismatch", message)


class CorruptArtifactError(ArtifactStoreError, IncompatibleWeightsError):
    """Artifact files that are not what was recorded: ``reason`` is ``missing_file``, ``unreadable_manifest``,
    ``manifest_mismatch``, ``hash_mismatch`` or ``unreadable_weights``.

    It is also an :class:`IncompatibleWeightsError`, so code that handles weights it cannot use handles it too.
    """


class ArtifactFormat(Protocol):
    """The two files of an artifact directory and where its manifest names the artifact's subject (the registry's
    ``ArtifactKind`` is one)."""

    @property
    def weights_file(self) -> str: ...

    @property
    def manifest_file(self) -> str: ...

    @property
    def subject_of(self) -> Callable[[dict[str, Any]], str | None]: ...


class ArtifactStore(Protocol):
    """Write-once storage of one artifact's files per ``(method, version)``."""

    def taken(self, method: str, version: str) -> bool:
        """Whether ``version`` already has files (a version number is then skipped, never overwritten)."""
        ...

    def location(self, method: str, version: str) -> str:
        """Where ``version``'s files are or would be (what :meth:`put` returns); no request is made."""
        ...

    def put(self, method: str, version: str, files: dict[str, bytes]) -> str:
        """Store ``files`` (name -> bytes) as the version's artifact; returns its location (kept in the record).

        Raises:
            ArtifactStoreError: the version already has files, or the artifact is too large for the store.
        """
        ...

    def read(self, location: str, names: tuple[str, ...]) -> dict[str, bytes]:
        """The bytes of the named files at ``location``.

        Raises:
            MissingArtifactFileError: a file is missing.
            ArtifactHashError: a content-addressed file does not hash to its address.
        """
        ...

    def discard(self, location: str) -> None:
        """Remove files that no record will point to (a registration that failed after :meth:`put`)."""
        ...


class LocalDirectoryStore:
    """Files under ``root/<method>/<version>/`` on a disk every replica can read; the location is the directory.

    A version's files are written into a hidden staging directory beside it, synced and renamed into place, so a
    crash leaves at most a hidden ``.v<N>.*`` directory that no record points to, never a half artifact.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def taken(self, method: str, version: str) -> bool:
        return (self.root / method / version).exists()

    def location(self, method: str, version: str) -> str:
        return str(self.root / method / version)

    def put(self, method: str, version: str, files: dict[str, bytes]) -> str:
        target = Path(self.location(method, version))
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=target.parent))
        try:
            for name, data in files.items():
                copy = staging / name
                copy.write_bytes(data)
                _fsync(copy)
                copy.chmod(0o444)
            staging.chmod(0o755)  # mkdtemp's 0700 would hide the artifact from replicas running as another user
            os.rename(staging, target)  # atomic; refuses to replace a directory that has files
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise ArtifactStoreError("version_exists", f"{target} already exists") from exc
            raise
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync(target.parent)
        return str(target)

    def read(self, location: str, names: tuple[str, ...]) -> dict[str, bytes]:
        files = {}
        for name in names:
            path = Path(location) / name
            if not path.is_file():
                raise MissingArtifactFileError(f"{path} is missing")
            files[name] = path.read_bytes()
        return files

    def discard(self, location: str) -> None:
        shutil.rmtree(location, ignore_errors=True)


class RedisArtifactStore:
    """Files as content-addressed Redis strings, for clusters without shared disk and without an object store.

    ``{ns}:blob:<sha256>`` holds a file's bytes (set once, never changed: the same bytes always have the same
    key), ``{ns}:{method}:files:{version}`` maps the version's file names to their sha256. Each file read is
    hashed again, so a blob changed in Redis is refused. Artifacts above ``max_bytes`` are refused: Redis holds
    everything in memory, and a large artifact belongs in an object store.

    Args:
        client: a redis-py client with ``decode_responses=False`` (the files are binary).
        namespace: the registry's key prefix.
        max_bytes: the largest artifact (all its files together) accepted.
    """

    def __init__(self, client: redis.Redis, namespace: str, *, max_bytes: int = DEFAULT_MAX_REDIS_BYTES):
        if client.get_encoder().decode_responses:
            raise ArtifactStoreError(
                "text_client", "the Redis artifact store needs a client with decode_responses=False"
            )
        self.client = client
        self.namespace = namespace
        self.max_bytes = max_bytes

    def _files_key(self, method: str, version: str) -> str:
        return f"{self.namespace}:{method}:files:{version}"

    def _blob_key(self, sha256: str) -> str:
        return f"{self.namespace}:blob:{sha256}"

    def taken(self, method: str, version: str) -> bool:
        return bool(self.client.exists(self._files_key(method, version)))

    def location(self, method: str, version: str) -> str:
        return f"{REDIS_ROOT}{self._files_key(method, version)}"

    def put(self, method: str, version: str, files: dict[str, bytes]) -> str:
        size = sum(len(data) for data in files.values())
        if size > self.max_bytes:
            raise ArtifactStoreError(
                "artifact_too_large",
                f"{method} {version}: {size} bytes exceed the Redis artifact store's limit of {self.max_bytes} "
                "(registry.max_redis_bytes); use an object store URL as registry.root for large artifacts",
            )
        digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
        key = self._files_key(method, version)
        if self.client.exists(key):  # version numbers come from INCR, so no two registrars write one version
            raise ArtifactStoreError("version_exists", f"{method} {version} already has files in Redis")
        with self.client.pipeline(transaction=True) as pipe:
            for name, data in files.items():
                pipe.set(self._blob_key(digests[name]), data, nx=True)
            pipe.hset(key, mapping=digests)
            pipe.execute()
        return self.location(method, version)

    def read(self, location: str, names: tuple[str, ...]) -> dict[str, bytes]:
        key = _redis_key(location)
        digests = {_text(name): _text(digest) for name, digest in self.client.hgetall(key).items()}
        files = {}
        for name in names:
            digest = digests.get(name)
            data = self.client.get(self._blob_key(digest)) if digest else None
            if data is None:
                raise MissingArtifactFileError(f"{location}: {name} is missing")
            actual = hashlib.sha256(data).hexdigest()
            if actual != digest:
                raise ArtifactHashError(f"{location}: {name} has sha256 {actual}, stored as {digest}")
            files[name] = data
        return files

    def discard(self, location: str) -> None:
        # Blobs stay: another version may hold the same bytes, and an orphan blob is harmless.
        self.client.delete(_redis_key(location))


class FsspecArtifactStore:
    """Files under ``<url>/<method>/<version>/`` in any fsspec filesystem (object stores, ``file://``, ``memory://``).

    Object stores have no atomic directory rename, so immutability is checked before writing and the manifest is
    written last: a version whose manifest is missing was never recorded and is never read.
    """

    def __init__(self, url: str):
        import fsspec

        try:
            self.fs, base = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise ArtifactStoreError("unsupported_url", f"registry.root {url!r}: {exc}") from exc
        self.url = url.rstrip("/")
        self.base = base.rstrip("/")

    def _directory(self, method: str, version: str) -> str:
        return f"{self.base}/{method}/{version}"

    def taken(self, method: str, version: str) -> bool:
        return bool(self.fs.exists(self._directory(method, version)))

    def location(self, method: str, version: str) -> str:
        return f"{self.url}/{method}/{version}"

    def put(self, method: str, version: str, files: dict[str, bytes]) -> str:
        directory = self._directory(method, version)
        if self.fs.exists(directory):
            raise ArtifactStoreError("version_exists", f"{self.url}/{method}/{version} already exists")
        self.fs.makedirs(directory, exist_ok=True)
        for name in sorted(files, key=lambda name: name.endswith(".json")):  # the manifest last
            self.fs.pipe_file(f"{directory}/{name}", files[name])
        return self.location(method, version)

    def read(self, location: str, names: tuple[str, ...]) -> dict[str, bytes]:
        directory = self.base + location[len(self.url) :]
        files = {}
        for name in names:
            try:
                files[name] = self.fs.cat_file(f"{directory}/{name}")
            except FileNotFoundError as exc:
                raise MissingArtifactFileError(f"{location}/{name} is missing") from exc
        return files

    def discard(self, location: str) -> None:
        directory = self.base + location[len(self.url) :]
        if self.fs.exists(directory):
            self.fs.rm(directory, recursive=True)


def open_artifact_store(
    root: str | Path, client: redis.Redis, namespace: str, *, max_redis_bytes: int = DEFAULT_MAX_REDIS_BYTES
) -> ArtifactStore:
    """The store ``registry.root`` names: ``redis://``, another URL (fsspec), or a local directory path."""
    text = str(root)
    if text.startswith("redis"):
        if text != REDIS_ROOT:
            raise ArtifactStoreError(
                "unsupported_url", f"registry.root {text!r}: use exactly {REDIS_ROOT!r} (the registry's own Redis)"
            )
        return RedisArtifactStore(client, namespace, max_bytes=max_redis_bytes)
    if "://" in text:
        return FsspecArtifactStore(text)
    return LocalDirectoryStore(text)


def read_manifest(directory: Path, artifact: ArtifactFormat) -> dict[str, Any]:
    """The manifest of an artifact directory, with every field the registry relies on present.

    Raises:
        CorruptArtifactError: a file is missing (``missing_file``), or the manifest is not JSON or lacks a field
            (``unreadable_manifest``).
    """
    manifest_path = directory / artifact.manifest_file
    for path in (directory / artifact.weights_file, manifest_path):
        if not path.is_file():
            raise CorruptArtifactError("missing_file", f"{path} is missing")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptArtifactError("unreadable_manifest", f"{manifest_path}: {exc}") from exc
    missing = [key for key in _REQUIRED_MANIFEST_KEYS if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise CorruptArtifactError("unreadable_manifest", f"{manifest_path} lacks {missing}")
    return manifest


def check_weights(weights: Path, sha256: str) -> None:
    """Raise :class:`CorruptArtifactError` unless ``weights`` hashes to ``sha256`` (``hash_mismatch``) and its
    safetensors header covers the whole file (``unreadable_weights``)."""
    from zsad_core.artifacts import sha256_file  # imports torch (seconds): only where files are checked

    actual = sha256_file(weights)
    if actual != sha256:
        raise CorruptArtifactError("hash_mismatch", f"{weights} has sha256 {actual}, expected {sha256}")
    try:
        with safe_open(str(weights), framework="numpy") as handle:  # reads and validates the header only
            handle.keys()
    except SafetensorError as exc:
        raise CorruptArtifactError(
            "unreadable_weights", f"{weights} is not a readable safetensors file: {exc}"
        ) from exc


def check_artifact(directory: Path, artifact: ArtifactFormat, recorded: Mapping[str, Any], label: str) -> None:
    """Raise unless the artifact files in ``directory`` are the recorded ones: the manifest holds every
    ``recorded`` field (its subject as ``method``) and the weights hash to the recorded ``sha256``.

    Raises:
        CorruptArtifactError: see :func:`read_manifest` and :func:`check_weights`; ``manifest_mismatch`` names every
            field that differs from the record (``label`` says whose).
    """
    manifest = read_manifest(directory, artifact)
    found = {**manifest, "method": artifact.subject_of(manifest)}
    wrong = [
        f"{key}: recorded {expected!r}, manifest {found.get(key)!r}"
        for key, expected in recorded.items()
        if found.get(key) != expected
    ]
    if wrong:
        raise CorruptArtifactError("manifest_mismatch", f"{label}: manifest was changed: {'; '.join(wrong)}")
    check_weights(directory / artifact.weights_file, recorded["sha256"])


def store_root_beside(root: str, folder: str) -> str:
    """A second store of the same kind beside the store ``root`` names: its sub-folder ``folder`` for a directory
    or URL; ``redis://`` itself, as the second store's keys live under its own namespace.

    Why beside and not elsewhere: whatever reaches the prompts (a mounted volume, the registry's Redis, an object
    store's credentials) then reaches the second store too, with no setting of its own.
    """
    if root == REDIS_ROOT:
        return root
    if "://" in root:
        return f"{root.rstrip('/')}/{folder}"
    return str(Path(root) / folder)


def _redis_key(location: str) -> str:
    if not location.startswith(REDIS_ROOT):
        raise MissingArtifactFileError(f"{location} is not a Redis artifact location")
    return location[len(REDIS_ROOT) :]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
