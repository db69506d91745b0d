"""Scoring batches of frames with the cameras' methods and storing the results: the work of one replica.

Why a plain class: the Ray Serve deployment (:mod:`services.serve_app`) adds batching, threads and metrics
around it, but what a replica computes — which method scores which camera, what goes to Redis, what a failed
frame answers — is testable here without Ray. One replica builds each distinct backbone once and shares it
between the methods that need it; cameras with identical settings share one method and batch together, and
all cameras whose methods read the same image stage share one vision forward per batch, whatever their products.

A camera with a few-shot reference set (``references`` in its config) gets its own method key: the loaded
method is wrapped in :class:`zsad_core.few_shot.FewShotMethod` with the set's memory, and
:meth:`InspectorCore.refresh_references` swaps sets between batches as prompts are swapped.
Live camera settings (:mod:`services.stores.camera_settings`) reach a replica through
:meth:`InspectorCore.apply_settings`: thresholds, pixel threshold and minimum region area, pause, and the prompt
version followed. Like a prompt swap, a change replaces whole tables in one assignment, and a batch reads them
once at its start, so every frame of a batch is decided by one settings version. The ROI is applied by ingest
(it crops before sending); the replica places regions with the geometry each frame carries, so a ROI change
never misplaces a box.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.audit_log import append_audit
from services.config import ConfigError, ZsadConfig
from services.frame_path.camera_method import (
    LoadedMethod,
    MethodBuilder,
    MethodKey,
    PromptSource,
    ReferenceSource,
    ResolvedPrompts,
    ResolvedReferences,
    keep_references,
    with_references,
)
from services.frame_path.decoding import AckStatus, FrameAck, FrameRequest, ModelUnavailableError
from services.frame_path.drift_watch import DriftWatch
from services.frame_path.metrics import PipelineMetrics
from services.frame_path.stage_tally import StageTally
from services.stores.artifact_registry import AuditEntry
from services.stores.camera_settings import CameraSettings
from services.stores.result_store import FrameResult, ResultStore, StoredSource, stored_map_values
from zsad_core.backbone import BackboneConfig, ClipBackbone
from zsad_core.decisions import DriftReference, MapPlacement, encode_regions, extract_regions
from zsad_core.methods import AnomalyResult, ZeroShotMethod
from zsad_core.methods.base import tensor_nbytes
from zsad_core.methods.stages import StageOutputs, encode_shared

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Swap:
    """The outcome of re-resolving one followed artifact, a prompt version or a camera's reference set: a swap,
    or why the serving one stays.

    Attributes:
        kind: ``prompts`` or ``references``.
        subject: the artifact's registry subject: the method for prompts, the camera for reference sets.
        follows: the version or alias followed.
        old_version, new_version: what served before and serves now (``None``: zero-shot).
        error_reason, error_detail: why the new one was refused; empty for a swap.
    """

    kind: Literal["prompts", "references"]
    subject: str
    follows: str
    old_version: str | None
    new_version: str | None
    error_reason: str = ""
    error_detail: str = ""

    @property
    def swapped(self) -> bool:
        """Whether the new version (or zero-shot, for ``None``) now serves."""
        return not self.error_reason


@dataclass(frozen=True)
class _Outcome:
    """One frame's model output, or why there is none."""

    score: float = math.nan
    anomaly_map: np.ndarray | None = None
    error: str = ""


class ReplicaUnhealthyError(RuntimeError):
    """The model failed on every frame of several batches in a row: this replica should be replaced."""


class InspectorCore:
    """Scores frames of configured cameras and writes their results to Redis.

    Args:
        config: the system configuration (cameras, serving settings).
        store: where results go.
        device: torch device of the backbones.
        metrics: where to report; ``None`` outside Ray.
        prompts: resolves cameras' prompt versions; required when a camera names one.
        references: resolves cameras' reference sets; required when a camera names one.
        replica: this replica's name in metrics.

    Raises:
        ConfigError: a camera names a prompt version or reference set and there is no source for it.
    """

    def __init__(
        self,
        config: ZsadConfig,
        store: ResultStore,
        *,
        device: str = "cpu",
        metrics: PipelineMetrics | None = None,
        prompts: PromptSource | None = None,
        references: ReferenceSource | None = None,
        replica: str = "inspector",
    ) -> None:
        self.config = config
        self.store = store
        self.device = device
        self.metrics = metrics
        self.prompts = prompts
        self.references = references
        self.replica = replica
        # Batches and prompt loads both run the shared backbone; they take turns (a load is a text-encoder pass).
        self._model_lock = threading.Lock()
        self._swap_lock = threading.Lock()  # one refresh at a time (the followers, an operator's call)
        # Guards reading the camera, method and settings tables together (a batch's snapshot) against a swap.
        self._state_lock = threading.Lock()
        # The last failure reported per kind ("prompts", "references") and key, not repeated.
        self._refusals: dict[tuple[str, MethodKey], str] = {}
        self.builder = MethodBuilder(config.serving, device, on_backbone=self._report_backbone)
        self.methods: dict[MethodKey, LoadedMethod] = {}
        self.stage_tally = StageTally()
        # Model calls in a row in which not one frame was scored (a broken device or model); any success resets it.
        self.model_failures = 0
        # The last image each method scored: scored again when nothing of a call scores, it tells frames the model
        # cannot score (their fault) from a model that scores nothing (the replica's).
        self._last_scored: dict[MethodKey, np.ndarray] = {}
        self.camera_keys: dict[str, MethodKey] = {}
        self.settings = {camera: CameraSettings.from_config(camera, cfg) for camera, cfg in config.cameras.items()}
        self.drift: dict[str, DriftWatch] = {}  # cameras whose calibration holds a drift reference
        for camera_id, camera in config.cameras.items():
            key = MethodKey.of_camera(camera_id, camera, camera.prompt_version)
            self.camera_keys[camera_id] = key
            if key not in self.methods:
                self.methods[key] = self._initial_references(key, self.builder.build(key, self._resolve(key)))
            if metrics is not None:
                metrics.prompt_version(camera_id, camera.method, self.methods[key].prompt_version)

    def _resolve(self, key: MethodKey) -> ResolvedPrompts | None:
        if key.prompt_version is None:
            return None
        if self.prompts is None:
            raise ConfigError(
                f"a camera asks for {key.method} prompt version {key.prompt_version!r}, "
                "but serving has no prompt registry to resolve it"
            )
        return self.prompts.resolve_prompts(key.method, key.prompt_version)

    def _report_backbone(self, config: BackboneConfig, backbone: ClipBackbone) -> None:
        """Say where a backbone's weights came from: ``random`` weights serve noise, and the metric shows it."""
        if self.metrics is not None:
            self.metrics.backbone_weights(self.replica, config.name, backbone.source.kind)

    @property
    def backbone_count(self) -> int:
        """Distinct backbones held (each a full CLIP in memory)."""
        return len(self.builder.backbones)

    def process(self, requests: Sequence[FrameRequest]) -> list[FrameAck]:
        """Score a batch and store the results; one acknowledgement per request, in order.

        Frames whose result already exists for the same bytes are acknowledged as ``duplicate`` without a model
        call; a frame id stored for other bytes is answered ``conflict`` (nothing stored). A model failure is
        isolated to the frames that cause it (the group is retried frame by frame) and answered as ``failed``.
        A Redis failure raises: nothing is acknowledged, so ingest retries the batch.

        Raises:
            redis.RedisError: the results could not be stored.
            KeyError: a request names a camera that is not configured (ingest checks this first).
        """
        start = time.time()
        # One version per batch: a swap replaces these tables, never changes the ones read here.
        with self._state_lock:
            camera_keys, methods, settings = self.camera_keys, self.methods, self.settings
        paused = {index for index, request in enumerate(requests) if settings[request.camera].paused}
        active = [index for index in range(len(requests)) if index not in paused]
        sources = self.store.stored_sources([(requests[i].camera, requests[i].frame_id) for i in active])
        known: dict[int, AckStatus] = {index: "skipped" for index in paused}
        found = {index: source for index, source in zip(active, sources, strict=True) if source is not None}
        rivals = {index: _rival(requests[index], source) for index, source in found.items()}
        known |= {index: status for index, source in found.items()
                  if (status := _known_status(requests[index], source)) is not None}  # fmt: skip
        groups: dict[MethodKey, list[int]] = defaultdict(list)
        for index, request in enumerate(requests):
            if index not in known:
                groups[camera_keys[request.camera]].append(index)
        outcomes: dict[int, _Outcome] = {}
        batch_sizes: dict[int, int] = {}
        scored = self._score_groups([(key, methods[key].module, [requests[i].image for i in indices])
                                     for key, indices in groups.items()])  # fmt: skip
        for indices, outcomes_of_group in zip(groups.values(), scored, strict=True):
            for index, outcome in zip(indices, outcomes_of_group, strict=True):
                outcomes[index] = outcome
                batch_sizes[index] = len(indices)
        infer_done = time.time()
        results = {
            index: self._result(requests[index], outcome, infer_done, camera_keys, methods, settings)
            for index, outcome in outcomes.items()
            if not outcome.error
        }
        written = dict(zip(results, self.store.write_results(list(results.values())), strict=True))
        store_done = time.time()
        self._watch_drift([result for index, result in results.items() if written[index].outcome == "stored"])
        acks = []
        for index, request in enumerate(requests):
            key = camera_keys[request.camera]
            common = {
                "camera": request.camera,
                "frame_id": request.frame_id,
                "partition": request.partition,
                "offset": request.offset,
                "prompt_version": methods[key].prompt_version,
                "queue_s": max(start - request.decoded_ts, 0.0) if request.decoded_ts else 0.0,
            }
            if index in known:
                rival = rivals.get(index)
                position = {"rival_partition": rival[0], "rival_offset": rival[1]} if rival else {}
                acks.append(FrameAck(status=known[index], **common, **position))
                continue
            outcome = outcomes[index]
            timings = {"infer_s": infer_done - start, "batch_size": batch_sizes[index]}
            if outcome.error:
                acks.append(FrameAck(status="failed", error_reason="inference_error", error_detail=outcome.error,
                                     **common, **timings))  # fmt: skip
                continue
            result, receipt = results[index], written[index]
            acks.append(FrameAck(status=receipt.outcome.value, score=result.score, label=result.label,
                                 rival_partition=receipt.rival_partition, rival_offset=receipt.rival_offset,
                                 store_s=store_done - infer_done, **common, **timings))  # fmt: skip
        self._report(requests, acks, set(known), start, infer_done, store_done, set(batch_sizes.values()), camera_keys)
        return acks

    def _score_groups(self, groups: list[tuple[MethodKey, ZeroShotMethod, list[np.ndarray]]]) -> list[list[_Outcome]]:
        """Every group's outcomes: first the image stages of all groups, each distinct stage once over the frames
        of every group that reads it (one vision forward per vision path, whatever the cameras' products), then
        each group's head. Stages that fail leave every group to be scored on its own (:meth:`_score`)."""
        if not groups:
            return []
        try:
            with self._model_lock:
                shared = encode_shared([(method, method.pixels(images)) for _, method, images in groups])
        except Exception as exc:  # noqa: BLE001 - each group is retried on its own, frame by frame if need be
            log.warning("image stages failed on %d group(s), scoring group by group: %s", len(groups), exc)
            return [self._score_counted(key, method, images) for key, method, images in groups]
        sizes = list(shared.forward_sizes.values())
        self.stage_tally.add(len(groups), sizes)
        if self.metrics is not None:
            self.metrics.image_stages(sizes)
        return [self._score_counted(key, method, images, outputs)
                for (key, method, images), outputs in zip(groups, shared.outputs, strict=True)]  # fmt: skip

    def _score_counted(
        self, key: MethodKey, method: ZeroShotMethod, images: list[np.ndarray], outputs: StageOutputs | None = None
    ) -> list[_Outcome]:
        """:meth:`_score`, deciding whose fault it is when no frame scores, and counting the model's failures in a
        row (:meth:`check_health`).

        Why the last scored image is scored again: a frame the model cannot score is retried alone by ingest, and
        its failures in a row must not look like a broken model, or healthy replicas get replaced for one frame.
        If the method still scores that image, the frames are at fault: answered ``failed`` (ingest dead-letters
        them after ``ingest.max_retries``) without counting. If it fails too, the model is: ``ModelUnavailableError``
        (ingest retries, the health check counts). A method that never scored blames a lone frame on its first
        failure only, as before.

        Raises:
            ModelUnavailableError: the model, not the frames, failed.
        """
        outcomes = self._score(key, method, images, outputs)
        scored = [image for image, outcome in zip(images, outcomes, strict=True) if not outcome.error]
        if scored:
            self._last_scored[key] = scored[-1]
            self._count_model_failure(failed=False)
            return outcomes
        if self._scores_again(key, method):
            self._count_model_failure(failed=False)
            return outcomes
        streak, known_good = self.model_failures, key in self._last_scored
        self._count_model_failure(failed=True)
        if len(images) > 1 or streak > 0 or known_good:
            raise ModelUnavailableError(f"{key.method} failed on every frame of a call of {len(images)} "
                                        f"({streak} such calls before): {outcomes[0].error}")  # fmt: skip
        return outcomes

    def _scores_again(self, key: MethodKey, method: ZeroShotMethod) -> bool:
        """Whether ``method`` still scores the last image it scored (``False`` when it never scored one)."""
        image = self._last_scored.get(key)
        return image is not None and not self._score(key, method, [image])[0].error

    def _count_model_failure(self, *, failed: bool) -> None:
        self.model_failures = self.model_failures + 1 if failed else 0
        if self.metrics is not None:
            self.metrics.model_failures(self.replica, self.model_failures)

    def check_health(self, unhealthy_after: int) -> None:
        """Raise when the model failed on every frame of ``unhealthy_after`` model calls in a row.

        Why only model failures: a replica that cannot score anything (a lost GPU, a corrupted model in memory)
        is fixed by a new replica, while Redis or broker outages are not, so those never fail the check.

        Raises:
            ReplicaUnhealthyError: the replica should be replaced.
        """
        if self.model_failures >= unhealthy_after:
            raise ReplicaUnhealthyError(f"the model failed on every frame of {self.model_failures} calls in a row")

    def _score(
        self, key: MethodKey, method: ZeroShotMethod, images: list[np.ndarray], outputs: StageOutputs | None = None
    ) -> list[_Outcome]:
        """Each image's outcome, from the head on ``outputs`` (the group's rows of the shared stages) or from a whole
        ``predict`` without them; a batch the model raises on is scored again frame by frame (each frame with a
        ``predict`` of its own), to isolate the cause."""
        try:
            with self._model_lock:
                return _outcomes(method.predict(images) if outputs is None else method.predict_head(outputs))
        except Exception as exc:  # noqa: BLE001 - isolated to its frames; _score_counted decides whose fault it is
            if len(images) == 1:
                log.warning("%s failed on a frame: %s", key.method, exc)
                return [_Outcome(error=f"{type(exc).__name__}: {exc}"[:512])]
            log.warning("%s failed on a batch of %d, retrying frame by frame: %s", key.method, len(images), exc)
            return [outcome for image in images for outcome in self._score(key, method, [image])]

    def _result(
        self,
        request: FrameRequest,
        outcome: _Outcome,
        infer_ts: float,
        camera_keys: dict[str, MethodKey],
        methods: dict[MethodKey, LoadedMethod],
        settings: dict[str, CameraSettings],
    ) -> FrameResult:
        key = camera_keys[request.camera]
        decided_by = settings[request.camera]
        regions = None
        if decided_by.pixel_threshold is not None and outcome.anomaly_map is not None:
            stored_map = stored_map_values(outcome.anomaly_map)  # what a reader of the result will see
            found = extract_regions(stored_map, decided_by.pixel_threshold, _placement(request),
                                    min_area=decided_by.min_area)  # fmt: skip
            regions = encode_regions(found)
        return FrameResult(
            camera=request.camera,
            frame_id=request.frame_id,
            score=outcome.score,
            threshold=decided_by.threshold,
            method=key.method,
            anomaly_map=outcome.anomaly_map,
            prompt_version=methods[key].prompt_version,
            reference_version=methods[key].reference_version,
            partition=request.partition,
            offset=request.offset,
            capture_ts=request.capture_ts,
            infer_ts=infer_ts,
            digest=request.content_digest,
            settings_version=decided_by.version,
            calibration_version=decided_by.calibration,
            regions=regions,
            weights=methods[key].module.backbone.source.kind,
            roi=request.geometry.region if request.geometry is not None else None,
            part_id=request.part_id,
            part_serial=request.part_serial,
            part_station=request.part_station,
        )

    def _watch_drift(self, stored: list[FrameResult]) -> None:
        """Feed newly stored scores to their cameras' drift windows; report the PSI, audit each new episode."""
        drift = self.drift
        scores: dict[str, list[float]] = defaultdict(list)
        for result in stored:
            if result.camera in drift:
                scores[result.camera].append(result.score)
        for camera, camera_scores in scores.items():
            watch = drift[camera]
            observation = watch.observe(camera_scores)
            if observation is None:
                continue
            result = observation.result
            if self.metrics is not None:
                self.metrics.drift(camera, result.statistic, result.drifted)
            if observation.episode_started:
                log.warning("%s: scores drifted from calibration %s (PSI %.3f over %d scores)", camera,
                            watch.calibration, result.statistic, result.window)  # fmt: skip
                self._audit_drift(camera, watch, result.statistic, result.window)

    def _audit_drift(self, camera: str, watch: DriftWatch, statistic: float, window: int) -> None:
        import redis

        entry = AuditEntry(
            action="drift", method=self.camera_keys[camera].method, alias=f"{camera}:calibration",
            from_version=watch.calibration, to_version=None, outcome="drifted", actor=self.replica,
            reason=f"PSI {statistic:.3f} of the last {window} scores against calibration {watch.calibration}",
            cause="score_drift",
        )  # fmt: skip
        try:
            append_audit(self.store.client, self.config.registry.namespace, entry.audit_fields())
        except redis.RedisError as exc:  # the results are stored; the metric still shows the drift
            log.warning("%s: could not audit the drift: %s", camera, exc)

    def apply_settings(self, settings: CameraSettings, drift_reference: DriftReference | None = None) -> None:
        """Serve ``settings`` from the next batch on: thresholds, regions, pause and the prompt version followed.

        Called by the replica's settings follower. A new prompt version is loaded on the shared backbone first;
        one that fails to resolve or load leaves the current version serving (logged) while the rest of the
        settings apply. ``drift_reference`` (the calibration's bins) restarts the camera's drift window when the
        calibration changes; without one the camera is not watched.

        Raises:
            KeyError: the camera is not served by this replica.
        """
        camera = settings.camera
        with self._swap_lock:
            key = self.camera_keys[camera]
            if settings.prompt_version != key.prompt_version:
                key = self._follow(camera, key, settings.prompt_version)
            with self._state_lock:
                self.camera_keys = {**self.camera_keys, camera: key}
                self.settings = {**self.settings, camera: settings}
                # A method no camera uses any more is dropped: memory, and no reload on its alias's moves.
                used = set(self.camera_keys.values())
                self.methods = {used_key: loaded for used_key, loaded in self.methods.items() if used_key in used}
                self._last_scored = {kept: image for kept, image in list(self._last_scored.items()) if kept in used}
            self._refusals = {refused: detail for refused, detail in self._refusals.items() if refused[1] in used}
            watch = self.drift.get(camera)
            if drift_reference is None or settings.calibration is None:
                self.drift = {name: kept for name, kept in self.drift.items() if name != camera}
            elif watch is None or watch.calibration != settings.calibration:
                self.drift = {**self.drift, camera: DriftWatch(drift_reference, settings.calibration)}
        if self.metrics is not None:
            self.metrics.thresholds(camera, settings.threshold, settings.pixel_threshold)
        log.info("%s: serving settings %s (threshold %s, pixel threshold %s, paused %s, prompts %s)", camera,
                 settings.version, settings.threshold, settings.pixel_threshold, settings.paused,
                 self.methods[key].prompt_version)  # fmt: skip

    def _follow(self, camera: str, key: MethodKey, prompt_version: str | None) -> MethodKey:
        """The method key of ``camera`` following ``prompt_version``, its method loaded; the old key on failure."""
        followed = dataclasses.replace(key, prompt_version=prompt_version)
        if followed not in self.methods:
            try:
                resolved = self._resolve(followed)
                with self._model_lock:
                    loaded = self._initial_references(followed, self.builder.build(followed, resolved))
            except Exception as exc:  # noqa: BLE001 - any failure keeps the serving version
                log.warning("%s: cannot follow prompt version %r, keeping %s: %s", camera, prompt_version,
                            self.methods[key].prompt_version, exc)  # fmt: skip
                return key
            with self._state_lock:
                self.methods = {**self.methods, followed: loaded}
        if self.metrics is not None:
            self.metrics.prompt_version(camera, key.method, self.methods[key].prompt_version, active=False)
            self.metrics.prompt_version(camera, key.method, self.methods[followed].prompt_version)
        return followed

    def _report(
        self,
        requests: Sequence[FrameRequest],
        acks: list[FrameAck],
        known: set[int],
        start: float,
        infer_done: float,
        store_done: float,
        batch_sizes: set[int],
        camera_keys: dict[str, MethodKey],
    ) -> None:
        if self.metrics is None:
            return
        for size in batch_sizes:
            self.metrics.batch(size)
        if batch_sizes:
            self.metrics.stage("inference", infer_done - start)
            self.metrics.stage("store", store_done - infer_done)
        for index, (request, ack) in enumerate(zip(requests, acks, strict=True)):
            self.metrics.stage("queue", ack.queue_s)
            if index in known and ack.status == "replaced":  # its own result again: counted when first stored
                self.metrics.duplicate(request.camera)
                continue
            if ack.status in ("stored", "replaced"):
                method = camera_keys[request.camera].method
                # Capture time 0: the camera has no clock (the contract allows it); its age would be decades.
                latency = store_done - request.capture_ts if request.capture_ts > 0 else None
                self.metrics.stored(request.camera, method, ack.label == 1, latency)
                self.metrics.decided(request.camera, "reject" if ack.label == 1 else "pass", ack.score)
            if ack.status in ("replaced", "conflict"):
                self.metrics.frame_id_conflict(request.camera, won=ack.status == "replaced")
            elif ack.status == "duplicate":
                self.metrics.duplicate(request.camera)
            elif ack.status == "skipped":
                self.metrics.decided(request.camera, "paused")

    def _resolve_references(self, key: MethodKey) -> ResolvedReferences | None:
        if key.references is None:
            return None
        if self.references is None:
            raise ConfigError(f"camera {key.references[0]} asks for reference set {key.references[1]!r}, "
                              "but serving has no reference registry to resolve it")  # fmt: skip
        return self.references.resolve_references(*key.references)

    def _initial_references(self, key: MethodKey, loaded: LoadedMethod) -> LoadedMethod:
        """``loaded`` with its camera's reference set; one that cannot be used leaves the camera zero-shot, and
        the first :meth:`refresh_references` reports why (a replica must start even when a set is bad)."""
        try:
            return with_references(key, loaded, self._resolve_references(key))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported by the refresh that retries it
            log.warning("camera %s references %s: starting zero-shot: %s", key.references, exc)
            return loaded

    def refresh_prompts(self, method: str | None = None) -> list[Swap]:
        """Re-resolve the prompt versions the cameras follow and swap in the ones that changed.

        Called by the replica's prompt follower when an alias moves (and periodically). Files are resolved and
        verified first; the new method is built on the shared backbone between batches; the method table is
        then replaced in one assignment, so a batch uses one version from start to end. A version that fails
        to resolve, verify or load leaves the current one serving, and the failure is returned once.

        Args:
            method: only cameras of this method (``None``: all that follow a version or an alias).
        """
        return self._refresh("prompts", method)

    def refresh_references(self, camera: str | None = None) -> list[Swap]:
        """Re-resolve the reference sets the cameras follow and swap in the ones that changed.

        Called by the replica's reference follower when an alias moves (and periodically), like
        :meth:`refresh_prompts`; the memory is checked against the method's backbone and input size first.

        Args:
            camera: only this camera's set (``None``: all).
        """
        return self._refresh("references", camera)

    def _refresh(self, kind: Literal["prompts", "references"], subject: str | None) -> list[Swap]:
        """Re-resolve what each used method follows of ``kind`` (of ``subject``'s, when given); swap the changed
        ones in; report each refusal once (a periodic re-check of the same bad version stays quiet)."""
        import redis

        swaps = []
        with self._swap_lock:
            for key, loaded in list(self.methods.items()):
                followed = key.references if kind == "references" else (key.method, key.prompt_version)
                if followed is None or followed[1] is None or subject not in (None, followed[0]):
                    continue
                owner, follows = followed
                serving = loaded.reference_version if kind == "references" else loaded.prompt_version
                try:
                    version, replacement = self._replacement(kind, key, loaded)
                except redis.RedisError as exc:  # the registry is unreachable: nothing to report about a version
                    log.warning("%s %s %s: registry unreachable, keeping %s: %s", kind, owner, follows, serving, exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - any failure keeps the serving version; reported below
                    detail = f"{type(exc).__name__}: {exc}"
                    log.warning("%s %s %s: keeping %s: %s", kind, owner, follows, serving, exc)
                    if self._refusals.get((kind, key)) != detail:
                        self._refusals[(kind, key)] = detail
                        swaps.append(Swap(kind, owner, follows, serving, None, _reason(exc), detail))
                    continue
                self._refusals.pop((kind, key), None)
                if replacement is None:
                    continue
                with self._state_lock:
                    self.methods = {**self.methods, key: replacement}
                swaps.append(Swap(kind, owner, follows, serving, version))
                log.info("%s %s %s: now serving %s (was %s)", kind, owner, follows, version, serving)
                if kind == "prompts" and self.metrics is not None:
                    for camera, camera_key in self.camera_keys.items():
                        if camera_key == key:
                            self.metrics.prompt_version(camera, key.method, serving, active=False)
                            self.metrics.prompt_version(camera, key.method, version)
        return swaps

    def _replacement(
        self, kind: Literal["prompts", "references"], key: MethodKey, loaded: LoadedMethod
    ) -> tuple[str | None, LoadedMethod | None]:
        """The version ``key`` follows of ``kind`` now, and the method to serve it (``None``: it already serves)."""
        if kind == "prompts":
            prompts = self._resolve(key)
            if prompts is None or prompts.version == loaded.prompt_version:
                return loaded.prompt_version, None
            with self._model_lock:
                return prompts.version, keep_references(self.builder.build(key, prompts), loaded)
        references = self._resolve_references(key)
        version = references.version if references is not None else None
        if version == loaded.reference_version:
            return version, None
        with self._model_lock:
            return version, with_references(key, loaded, references)

    def describe(self) -> dict[str, object]:
        """What this replica serves: per camera its method, prompt version, settings and input size; and the
        memory it holds for them (:meth:`memory`)."""
        return {
            "device": self.device,
            "backbones": [config.name for config in self.builder.backbones],
            "image_stages": self.stage_tally.describe(),
            "cameras": {
                camera: {
                    "method": key.method,
                    "prompt_version": self.methods[key].prompt_version,
                    "reference_version": self.methods[key].reference_version,
                    "settings_version": self.settings[camera].version,
                    "calibration_version": self.settings[camera].calibration,
                    "threshold": self.settings[camera].threshold,
                    "pixel_threshold": self.settings[camera].pixel_threshold,
                    "paused": self.settings[camera].paused,
                    "image_size": self.methods[key].module.image_size,
                }
                for camera, key in self.camera_keys.items()
            },
            "memory": self.memory(),
        }

    def memory(self) -> dict[str, object]:
        """Bytes held for the cameras: each backbone once, and per loaded method (cameras with identical settings
        share one) its own tensors (text features, learned prompts, reference memory) and the cameras using it.

        Why per method and not per camera: cameras on one product share a method, so what a camera costs is its
        method's bytes over the cameras sharing it; ``per_camera_bytes`` is that mean over all cameras.
        """
        with self._state_lock:
            camera_keys, methods = self.camera_keys, self.methods
        users = Counter(camera_keys.values())
        entries = [
            {"method": key.method, "class_name": key.class_name, "domain": key.domain,
             "image_size": loaded.module.image_size, "prompt_version": loaded.prompt_version,
             "reference_version": loaded.reference_version, "cameras": users[key],
             "bytes": loaded.module.own_nbytes()}
            for key, loaded in methods.items()
        ]  # fmt: skip
        methods_bytes = sum(int(entry["bytes"]) for entry in entries)
        return {
            "backbones": {backbone.identity: tensor_nbytes(backbone) for backbone in self.builder.backbones.values()},
            "methods": entries,
            "methods_bytes": methods_bytes,
            "per_camera_bytes": methods_bytes / len(camera_keys) if camera_keys else 0.0,
        }


def _known_status(request: FrameRequest, stored: StoredSource) -> AckStatus | None:
    """A frame whose id has a result: the same bytes again (or bytes of unknown digest), other bytes read after the
    stored ones (refused), or ``None``: other bytes read before them, which are scored and take the id.

    A re-delivery of the very record whose result replaced another's is answered ``replaced`` again, naming the
    replaced record: the first answer may never have reached ingest (a replica that died between the write and
    the reply), and without it the replaced record would be committed with neither result nor dead letter.
    Ingest letters a record once, so a second answer sends nothing twice.
    """
    if stored.replaces and (stored.partition, stored.offset) == (request.partition, request.offset):
        return "replaced"
    if not stored.digest or not request.content_digest or stored.digest == request.content_digest:
        return "duplicate"
    known = min(request.partition, request.offset, stored.partition, stored.offset) >= 0
    earlier = (request.partition, request.offset) < (stored.partition, stored.offset)
    return None if known and earlier else "conflict"


def _rival(request: FrameRequest, stored: StoredSource) -> tuple[int, int]:
    """The other record of a known frame's ack: the one it replaced for its own re-delivery, else the stored one."""
    if stored.replaces and (stored.partition, stored.offset) == (request.partition, request.offset):
        partition, offset = stored.replaces.split(":")
        return int(partition), int(offset)
    return stored.partition, stored.offset


def _placement(request: FrameRequest) -> MapPlacement:
    """Where the frame's map lies in the original frame: the region ingest cut, else the whole image."""
    if request.geometry is None:
        return MapPlacement.for_frame(request.image.shape[1], request.image.shape[0])
    x, y, width, height = request.geometry.region
    return MapPlacement(x, y, width, height)


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", "")) or "load_failed"


def _outcomes(result: AnomalyResult) -> list[_Outcome]:
    """One outcome per frame of a method's result; a frame with a non-finite score or map fails on its own."""
    maps = result.maps.cpu().numpy()
    scores = result.scores.cpu().numpy()
    outcomes = []
    for anomaly_map, score in zip(maps, scores, strict=True):
        if not (math.isfinite(float(score)) and np.isfinite(anomaly_map).all()):
            outcomes.append(_Outcome(error="the method returned a non-finite score or map"))
        else:
            outcomes.append(_Outcome(score=float(score), anomaly_map=anomaly_map))
    return outcomes
