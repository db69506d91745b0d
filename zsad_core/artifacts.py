"""Prompt artifacts: a method's own weights as safetensors plus a JSON manifest, never a pickle.

An artifact is a directory with ``prompts.safetensors`` and ``manifest.json``. The manifest records what the
weights belong to (method, backbone identity with input size, taps, config) and the sha256 of the weight
file, so a loader refuses weights for another backbone or tap set, and a truncated or altered file, before
touching the model.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zsad_core.errors import IncompatibleWeightsError
from zsad_core.methods.base import ZeroShotMethod
from zsad_core.version import __version__

SCHEMA_VERSION = 1
WEIGHTS_FILE = "prompts.safetensors"
MANIFEST_FILE = "manifest.json"
_CHECKED_KEYS = ("method", "backbone", "taps", "image_size")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_prompts(method: ZeroShotMethod, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``method``'s state dict and manifest into ``directory`` (created; existing files are refused).

    Args:
        method: the method whose own weights are saved (the backbone is never part of them).
        directory: target directory; must not already hold an artifact (artifacts are immutable).
        extra: more manifest fields (training data, metrics, ...).

    Returns:
        The artifact directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights, manifest_path = directory / WEIGHTS_FILE, directory / MANIFEST_FILE
    if weights.exists() or manifest_path.exists():
        raise FileExistsError(f"{directory} already holds an artifact; artifacts are immutable")
    state = {key: value.detach().cpu().contiguous() for key, value in method.state_dict().items()}
    save_file(state, str(weights), metadata={"method": method.name})
    manifest = {
        **method.describe(),
        "schema_version": SCHEMA_VERSION,
        "sha256": sha256_file(weights),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "zsad_version": __version__,
        **(extra or {}),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


def read_manifest(location: str | Path) -> tuple[dict[str, Any], Path]:
    """The manifest and weight-file path of an artifact directory (or of its weight file)."""
    location = Path(location)
    directory = location if location.is_dir() else location.parent
    manifest = load_manifest_json(directory, IncompatibleWeightsError, "prompt weights need their manifest")
    return manifest, directory / WEIGHTS_FILE


def load_manifest_json(directory: Path, error: type[IncompatibleWeightsError], needed_by: str) -> dict[str, Any]:
    """The parsed ``manifest.json`` of an artifact directory (prompt weights, a reference memory).

    Raises:
        error: the file is missing (``needed_by`` says what needs it) or not JSON.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise error(f"{directory} has no {MANIFEST_FILE}; {needed_by}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise error(f"{path} is not valid JSON: {exc}") from exc


def check_compatible(method: ZeroShotMethod, manifest: dict[str, Any]) -> None:
    """Raise :class:`IncompatibleWeightsError` naming every field where ``manifest`` and ``method`` disagree."""
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise IncompatibleWeightsError(
            f"artifact schema version {manifest.get('schema_version')!r} is not {SCHEMA_VERSION}"
        )
    ours = method.describe()
    wrong = [
        f"{key}: artifact {manifest.get(key)!r} != model {ours[key]!r}"
        for key in _CHECKED_KEYS
        if manifest.get(key) != ours[key]
    ]
    # Flags the weights were trained under (official quirks, activations): an artifact that recorded another
    # value would load without error and score wrongly. Artifacts written before a flag existed do not record
    # it and are not checked for it: no default can stand in, since e.g. ViP2-CLIP artifacts without a record
    # were trained with global_ln_post=True before its fidelity fix and with False in the short time after it.
    recorded = manifest.get("config") or {}
    wrong += [
        f"config {flag}: artifact {recorded[flag]!r} != model {ours['config'][flag]!r} (load it with "
        f"{flag}={recorded[flag]!r})"
        for flag in type(method.config).feature_flags
        if flag in recorded and flag in ours["config"] and recorded[flag] != ours["config"][flag]
    ]
    if wrong:
        raise IncompatibleWeightsError("prompt artifact does not fit this model: " + "; ".join(wrong))


def load_prompts(method: ZeroShotMethod, location: str | Path) -> dict[str, Any]:
    """Verify and load an artifact into ``method``; returns its manifest.

    Order matters: manifest compatibility and the file hash are checked before any tensor is read, so a
    wrong or damaged artifact never changes the model.
    """
    manifest, weights = read_manifest(location)
    check_compatible(method, manifest)
    if not weights.is_file():
        raise IncompatibleWeightsError(f"{weights} is missing")
    actual = sha256_file(weights)
    if actual != manifest.get("sha256"):
        raise IncompatibleWeightsError(f"{weights} has sha256 {actual}, manifest says {manifest.get('sha256')}")
    try:
        state = load_file(str(weights))
    except SafetensorError as exc:
        raise IncompatibleWeightsError(f"{weights} is not a readable safetensors file: {exc}") from exc
    try:
        method.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise IncompatibleWeightsError(f"{weights} does not match {method.name}'s parameters: {exc}") from exc
    return manifest
