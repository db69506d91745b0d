"""Live per-camera settings and calibration records in Redis: versioned, with history, audited, announced.

Why not the YAML file: a threshold means something only for one method, prompt version and product, and it
must change when the camera is recalibrated, without a redeploy. The YAML values remain the starting point: a
camera without a stored record is served with them (:meth:`CameraSettingsStore.settings`), and the first change
copies them into version ``s1``.

The mechanisms are the artifact registry's (:mod:`services.stores.artifact_registry`), with its
namespace, so one Redis holds one deployment's registry and cameras together:

* a record never changes once written; versions come from a per-camera Redis INCR (``s<N>`` for settings,
  ``c<N>`` for calibrations), never reused;
* what is current is the last element of a history list, like an alias: a rollback pops it;
* every change is an entry of the registry's audit stream in the registry's audit format (``action``
  ``camera_set``, ``calibrate`` or ``calibration_rollback``; ``alias`` is ``<camera>:settings`` or
  ``<camera>:calibration``; ``method`` is the camera's method), written in the same MULTI as the change;
* every change is published on the registry's events channel as JSON ``{"camera", "kind": "settings",
  "version", "action"}``; prompt followers ignore it (it names no method),
  :class:`~services.frame_path.settings_follower.CameraSettingsFollower` reads it.

A calibration moves two pointers in one transaction: the calibration history gets the new record, and the
settings get a new version carrying its image and pixel thresholds. Rolling a calibration back pops the first and
writes a settings version with the restored calibration's thresholds.

Redis layout under ``{ns}:camera:{camera}``: ``settings:seq``, ``settings:{sN}`` (JSON), ``settings:history``
(list), ``calibration:seq``, ``calibration:{cN}`` (JSON), ``calibration:history`` (list).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import redis
from pydantic import ValidationError

from services.audit_log import append_audit
from services.config import CameraConfig, ZsadConfig
from services.stores.artifact_registry import ArtifactRegistry, AuditEntry, RegistryError, _now, _text
from zsad_core.decisions import DriftReference
from zsad_core.errors import ZsadError

if TYPE_CHECKING:
    from redis.client import Pipeline

SETTABLE = ("threshold", "pixel_threshold", "min_area", "roi", "paused", "prompt_version")
CALIBRATED = ("threshold", "pixel_threshold")
SettingSource = Literal["yaml", "live", "calibration"]


class CameraSettingsError(ZsadError, ValueError):
    """A settings change or calibration operation that cannot be done (invalid value, nothing to roll back)."""

    reason = "bad_settings"


@dataclass(frozen=True)
class CameraSettings:
    """What a replica applies to one camera's frames.

    Attributes:
        camera: the camera id.
        version: ``s<N>``, or ``None`` for the configuration file's values (no change was ever stored).
        threshold: image score from which a frame is anomalous.
        pixel_threshold: map value from which a pixel belongs to a defect region (``None``: no regions).
        min_area: smallest region kept, in frame pixels.
        roi: ``(x, y, w, h)`` of the frame that is inspected, or ``None`` for the whole frame.
        paused: the camera's frames are not inspected.
        prompt_version: the prompt version or alias followed (``None``: the method's zero-shot prompts).
        calibration: the calibration record that set the thresholds, if any.
        updated_at, updated_by, reason: the change that made this version.
    """

    camera: str
    version: str | None
    threshold: float
    pixel_threshold: float | None = None
    min_area: int = 0
    roi: tuple[int, int, int, int] | None = None
    paused: bool = False
    prompt_version: str | None = None
    calibration: str | None = None
    updated_at: str = ""
    updated_by: str = ""
    reason: str = ""

    @classmethod
    def from_config(cls, camera: str, config: CameraConfig) -> CameraSettings:
        """The configuration file's values, before any change was stored."""
        return cls(camera, None, config.threshold, pixel_threshold=config.pixel_threshold, min_area=config.min_area,
                   roi=config.roi, prompt_version=config.prompt_version)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return {**dataclasses.asdict(self), "roi": list(self.roi) if self.roi is not None else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CameraSettings:
        """The inverse of :meth:`to_dict`."""
        roi = data.get("roi")
        return cls(**{**data, "roi": tuple(roi) if roi is not None else None})


@dataclass(frozen=True)
class CalibrationRecord:
    """One calibration: the thresholds it chose and the evidence (see :mod:`services.decisions.calibration`).

    Attributes:
        camera, version: the camera and ``c<N>``.
        image_threshold, pixel_threshold: the chosen thresholds.
        created_at, created_by, reason: who calibrated, when, why.
        evidence: what was scored and decided (method, prompt version, frame size, counts, quantiles, the image
            and pixel choices, the drift reference bins).
    """

    camera: str
    version: str
    image_threshold: float
    pixel_threshold: float | None
    created_at: str
    created_by: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return dataclasses.asdict(self)


class CameraSettingsStore:
    """Per-camera settings and calibrations, kept with the prompt registry's mechanisms (module docstring).

    Args:
        registry: gives the Redis client, namespace, audit stream and events channel; and resolves prompt
            versions a change asks for.
        config: the configured cameras (unknown cameras are refused) and their starting values.
    """

    def __init__(self, registry: ArtifactRegistry, config: ZsadConfig) -> None:
        self.registry = registry
        self.config = config
        self.client = registry.client

    def _key(self, camera: str, *parts: str) -> str:
        return ":".join((self.registry.namespace, "camera", camera, *parts))

    def settings(self, camera: str) -> CameraSettings:
        """The current settings: the newest stored version, else the configuration file's values.

        Raises:
            UnknownCameraError: the camera is not configured.
        """
        return self._current_settings(self.client, camera)

    def settings_of(self, cameras: Sequence[str]) -> dict[str, CameraSettings]:
        """The current settings of many cameras in two round trips, whatever their number (the overview of a line).

        Raises:
            UnknownCameraError: a camera is not configured.
            CameraSettingsError: a stored version is missing from Redis.
        """
        configured = {camera: self.config.camera(camera) for camera in cameras}
        with self.client.pipeline(transaction=False) as pipe:
            for camera in cameras:
                pipe.lindex(self._key(camera, "settings", "history"), -1)
            versions = {camera: _text(v) for camera, v in zip(cameras, pipe.execute(), strict=True) if v is not None}
        with self.client.pipeline(transaction=False) as pipe:
            for camera, version in versions.items():
                pipe.get(self._key(camera, "settings", version))
            raws = dict(zip(versions, pipe.execute(), strict=True)) if versions else {}
        current = {}
        for camera in cameras:
            if camera not in raws:
                current[camera] = CameraSettings.from_config(camera, configured[camera])
            elif raws[camera] is None:
                raise CameraSettingsError(f"settings {versions[camera]} of {camera} are missing from Redis")
            else:
                current[camera] = CameraSettings.from_dict(json.loads(raws[camera]))
        return current

    def _current_settings(self, reader: redis.Redis | Pipeline, camera: str) -> CameraSettings:
        configured = self.config.camera(camera)
        version = reader.lindex(self._key(camera, "settings", "history"), -1)
        if version is None:
            return CameraSettings.from_config(camera, configured)
        return self._settings_version(reader, camera, _text(version))

    def _settings_version(self, reader: redis.Redis | Pipeline, camera: str, version: str) -> CameraSettings:
        raw = reader.get(self._key(camera, "settings", version))
        if raw is None:
            raise CameraSettingsError(f"settings {version} of {camera} are missing from Redis")
        return CameraSettings.from_dict(json.loads(raw))

    def settings_history(self, camera: str) -> list[CameraSettings]:
        """Every stored settings version of ``camera``, oldest first (the last is current)."""
        self.config.camera(camera)
        versions = [_text(v) for v in self.client.lrange(self._key(camera, "settings", "history"), 0, -1)]
        return [self._settings_version(self.client, camera, version) for version in versions]

    def sources(self, camera: str) -> dict[str, SettingSource]:
        """Where each current value of ``camera`` came from (:func:`setting_sources`).

        Raises:
            UnknownCameraError: the camera is not configured.
        """
        configured = CameraSettings.from_config(camera, self.config.camera(camera))
        return setting_sources(configured, self.settings_history(camera))

    def update(self, camera: str, changes: dict[str, Any], *, actor: str, reason: str) -> CameraSettings:
        """Store a new settings version: the current one with ``changes`` (fields of :data:`SETTABLE`) applied.

        A threshold set by hand detaches the settings from their calibration record (``calibration`` is cleared).

        Raises:
            UnknownCameraError: the camera is not configured.
            CameraSettingsError: an unknown field, an invalid value, or a prompt version the registry lacks.
        """
        unknown = sorted(set(changes) - set(SETTABLE))
        if unknown:
            raise CameraSettingsError(f"cannot set {unknown}; settable fields are {list(SETTABLE)}")
        checked = self._checked(camera, changes)
        if {"threshold", "pixel_threshold"} & set(changes):
            checked["calibration"] = None  # the thresholds no longer come from a calibration record

        def plan(pipe: Pipeline) -> list[_Move]:
            current = self._current_settings(pipe, camera)
            return [_Move("settings", dataclasses.replace(current, **checked).to_dict())]

        return _settings_of(self._transact(camera, plan, action="camera_set", actor=actor, reason=reason))

    def _checked(self, camera: str, changes: dict[str, Any]) -> dict[str, Any]:
        """``changes`` validated with the configuration's own rules (threshold, ROI) and the registry."""
        configured = self.config.camera(camera)
        checked = dict(changes)
        for name in ("threshold", "pixel_threshold", "min_area"):
            if isinstance(changes.get(name), bool):  # bool is an int in Python: True would mean 1
                raise CameraSettingsError(f"{name} must be a number, got {changes[name]!r}")
        try:
            probe = CameraConfig.model_validate(
                {**configured.model_dump(), **{k: v for k, v in changes.items() if k in ("threshold", "roi")}}
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"].removeprefix("Value error, ")
                for e in exc.errors()
            )
            raise CameraSettingsError(f"invalid settings for {camera}: {problems}") from None
        if "threshold" in changes:
            checked["threshold"] = probe.threshold
        if "roi" in changes:
            checked["roi"] = probe.roi
        pixel = changes.get("pixel_threshold")
        if pixel is not None and not (isinstance(pixel, int | float) and math.isfinite(pixel)):
            raise CameraSettingsError(f"pixel_threshold must be a finite number or null, got {pixel!r}")
        if "min_area" in changes and not (isinstance(changes["min_area"], int) and changes["min_area"] >= 0):
            raise CameraSettingsError(f"min_area must be a non-negative integer, got {changes['min_area']!r}")
        if "paused" in changes and not isinstance(changes["paused"], bool):
            raise CameraSettingsError(f"paused must be true or false, got {changes['paused']!r}")
        version = changes.get("prompt_version")
        if version is not None:
            try:
                self.registry.resolve(configured.method, version)
            except RegistryError as exc:
                raise CameraSettingsError(f"cannot follow prompt version {version!r}: {exc}") from exc
        return checked

    def record_calibration(
        self,
        camera: str,
        *,
        image_threshold: float,
        pixel_threshold: float | None,
        evidence: dict[str, Any],
        actor: str,
        reason: str,
    ) -> tuple[CalibrationRecord, CameraSettings]:
        """Store a calibration record and apply its thresholds as a new settings version, in one transaction.

        Raises:
            UnknownCameraError: the camera is not configured.
            CameraSettingsError: a threshold is not finite.
        """
        self._checked(camera, {"threshold": image_threshold, "pixel_threshold": pixel_threshold})

        def plan(pipe: Pipeline) -> list[_Move]:
            current = self._current_settings(pipe, camera)
            record = {"camera": camera, "image_threshold": image_threshold, "pixel_threshold": pixel_threshold,
                      "created_by": actor, "reason": reason, "evidence": evidence}  # fmt: skip
            thresholds = {"threshold": image_threshold, "pixel_threshold": pixel_threshold}
            return [_Move("calibration", record), _Move("settings", {**current.to_dict(), **thresholds})]

        moved = self._transact(camera, plan, action="calibrate", actor=actor, reason=reason)
        return _calibration_of(moved), _settings_of(moved)

    def calibration(self, camera: str, version: str | None = None) -> CalibrationRecord:
        """A calibration record; ``None``: the current one.

        Raises:
            UnknownCameraError: the camera is not configured.
            CameraSettingsError: the camera has no calibration, or none of that version.
        """
        self.config.camera(camera)
        if version is None:
            current = self.client.lindex(self._key(camera, "calibration", "history"), -1)
            if current is None:
                raise CameraSettingsError(f"{camera} has never been calibrated")
            version = _text(current)
        raw = self.client.get(self._key(camera, "calibration", version))
        if raw is None:
            known = ", ".join(record.version for record in self.calibrations(camera)) or "none"
            raise CameraSettingsError(f"{camera} has no calibration {version!r}; calibrations: {known}")
        return CalibrationRecord(**json.loads(raw))

    def drift_reference(self, settings: CameraSettings) -> DriftReference | None:
        """The drift bins of the calibration that set ``settings``' thresholds (``None``: none, or no bins).

        Raises:
            CameraSettingsError: the calibration record is missing.
            CalibrationError: its stored bins are malformed.
        """
        if settings.calibration is None:
            return None
        return drift_reference(self.calibration(settings.camera, settings.calibration).evidence)

    def calibrations(self, camera: str) -> list[CalibrationRecord]:
        """Every calibration record of ``camera`` ever stored, oldest first (rolled-back ones included)."""
        self.config.camera(camera)
        last = int(self.client.get(self._key(camera, "calibration", "seq")) or 0)
        keys = [self._key(camera, "calibration", f"c{n}") for n in range(1, last + 1)]
        raws = self.client.mget(keys) if keys else []
        return [CalibrationRecord(**json.loads(raw)) for raw in raws if raw is not None]

    def calibration_history(self, camera: str) -> list[str]:
        """The calibration versions that were current in turn, oldest first; the last one is current."""
        self.config.camera(camera)
        return [_text(v) for v in self.client.lrange(self._key(camera, "calibration", "history"), 0, -1)]

    def rollback_calibration(self, camera: str, *, actor: str, reason: str) -> tuple[CalibrationRecord, CameraSettings]:
        """Make the previous calibration current again and apply its thresholds as a new settings version.

        Raises:
            UnknownCameraError: the camera is not configured.
            CameraSettingsError: the camera has no earlier calibration.
        """
        self.config.camera(camera)
        history = self._key(camera, "calibration", "history")

        def plan(pipe: Pipeline) -> list[_Move]:
            versions = [_text(v) for v in pipe.lrange(history, -2, -1)]
            if len(versions) < 2:
                state = f"it is {versions[0]}" if versions else "it has none"
                raise CameraSettingsError(f"{camera} has no earlier calibration to roll back to ({state})")
            previous = CalibrationRecord(**json.loads(pipe.get(self._key(camera, "calibration", versions[0]))))
            current = self._current_settings(pipe, camera)
            thresholds = {"threshold": previous.image_threshold, "pixel_threshold": previous.pixel_threshold,
                          "calibration": previous.version}  # fmt: skip
            return [_Move("calibration", None), _Move("settings", {**current.to_dict(), **thresholds})]

        moved = self._transact(camera, plan, action="calibration_rollback", actor=actor, reason=reason)
        return self.calibration(camera), _settings_of(moved)

    def _transact(
        self,
        camera: str,
        plan: Callable[[Pipeline], list[_Move]],
        *,
        action: str,
        actor: str,
        reason: str,
    ) -> list[_Move]:
        """Decide with ``plan`` under WATCH of the camera's history lists, then write the new records, move the
        pointers, audit and publish in one MULTI (the registry's alias-move pattern); a concurrent change makes
        the decision stale, so redis-py's transaction retakes it. A ``_Move`` with a record pushes a new version;
        without, pops."""
        method = self.config.camera(camera).method
        watched = [self._key(camera, kind, "history") for kind in ("settings", "calibration")]

        def move(pipe: Pipeline) -> list[_Move]:
            moves = plan(pipe)
            pipe.multi()
            moves = self._queue_moves(pipe, camera, moves, actor=actor, reason=reason)
            for done in moves:
                audit = AuditEntry(
                    action=action, method=method, alias=f"{camera}:{done.kind}", from_version=done.replaced,
                    to_version=done.version, outcome="applied", actor=actor, reason=reason,
                )  # fmt: skip
                append_audit(pipe, self.registry.namespace, audit.audit_fields())
            settings_version = next(done.version for done in moves if done.kind == "settings")
            event = {"camera": camera, "kind": "settings", "version": settings_version, "action": action}
            pipe.publish(self.registry.events_channel, json.dumps(event))
            return moves

        return self.client.transaction(move, *watched, value_from_callable=True)

    def _queue_moves(self, pipe: Pipeline, camera: str, moves: list[_Move], *, actor: str, reason: str) -> list[_Move]:
        """Number new records and queue their writes and pointer moves; returns the moves with versions set.

        Runs after ``pipe.multi()``, so the version numbers come from a separate connection: a retried
        transaction leaves a gap in the numbers, never a reused one.
        """
        done = []
        calibration_version = None
        for move in moves:
            history = self._key(camera, move.kind, "history")
            if move.record is None:
                replaced = _text(self.client.lindex(history, -1))
                restored = _text(self.client.lindex(history, -2))
                pipe.rpop(history)
                done.append(dataclasses.replace(move, version=restored, replaced=replaced))
                continue
            prefix = "s" if move.kind == "settings" else "c"
            version = f"{prefix}{int(self.client.incr(self._key(camera, move.kind, 'seq')))}"
            record = {**move.record, "version": version}
            stamp = _now()
            if move.kind == "calibration":
                record["created_at"] = stamp
                calibration_version = version
            else:
                record.update(updated_at=stamp, updated_by=actor, reason=reason)
                if calibration_version is not None:
                    record["calibration"] = calibration_version
            pipe.set(self._key(camera, move.kind, version), json.dumps(record))
            pipe.rpush(history, version)
            previous = self.client.lindex(history, -1)
            done.append(dataclasses.replace(move, record=record, version=version,
                                            replaced=None if previous is None else _text(previous)))  # fmt: skip
        return done


@dataclass(frozen=True)
class _Move:
    """One pointer move of a transaction: push ``record`` as a new version of ``kind``, or pop (``None``)."""

    kind: str
    record: dict[str, Any] | None
    version: str | None = None
    replaced: str | None = None


def _settings_of(moves: list[_Move]) -> CameraSettings:
    move = next(move for move in moves if move.kind == "settings")
    assert move.record is not None
    return CameraSettings.from_dict(move.record)


def _calibration_of(moves: list[_Move]) -> CalibrationRecord:
    move = next(move for move in moves if move.kind == "calibration")
    assert move.record is not None
    return CalibrationRecord(**move.record)


def setting_sources(configured: CameraSettings, history: list[CameraSettings]) -> dict[str, SettingSource]:
    """Where each settable value of the newest of ``history`` came from: ``yaml``, ``live`` or ``calibration``.

    Why: once a camera has a stored version, every value is read from Redis and YAML edits no longer apply, so an
    operator needs to see which values a change or a calibration made. Each value is named after the last stored
    version that set it: a calibration or its rollback (the thresholds: ``calibration``) or any other change
    (``live``; the first version is compared with the configuration ``configured`` now, so a YAML edit after the
    first change shows the stored value as ``live``); a value no version set is ``yaml``.

    Args:
        configured: the configuration file's values (:meth:`CameraSettings.from_config`).
        history: the stored versions, oldest first (empty: nothing was ever changed).
    """
    sources: dict[str, SettingSource] = dict.fromkeys(SETTABLE, "yaml")
    previous = configured
    for version in history:
        calibrated = version.calibration is not None and version.calibration != previous.calibration
        for name in SETTABLE:
            if calibrated and name in CALIBRATED:
                sources[name] = "calibration"
            elif getattr(version, name) != getattr(previous, name):
                sources[name] = "live"
        previous = version
    return sources


def load_camera_settings(registry: ArtifactRegistry, config: ZsadConfig, camera: str) -> CameraSettings:
    """The settings a replica should apply to ``camera`` now (the stored version, else the configuration's).

    Raises:
        UnknownCameraError: the camera is not configured.
        redis.RedisError: Redis is unreachable (the replica keeps its last settings).
    """
    return CameraSettingsStore(registry, config).settings(camera)


def drift_reference(evidence: dict[str, Any]) -> DriftReference | None:
    """The reference bins a calibration record's evidence holds (``None``: calibrated without them)."""
    stored = evidence.get("drift_reference")
    return DriftReference.from_dict(stored) if stored is not None else None
