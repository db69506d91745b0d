"""Calibrating a camera: score known-good (and known-bad) images as the camera is served, then pick thresholds.

Why in-process and not through the running replicas: calibration images are not frames of the stream (they
must not produce results, events or metrics), and a calibration has to work before the stack is up. It builds
the camera's method with the replicas' builder (:mod:`services.frame_path.camera_method`: method, class, domain,
input size, options, serving backbone and precision, the prompt version the camera follows now and its reference
set, resolved and hash-checked through the registries) and feeds it the camera's current ROI squashed to the
input size, as ingest does, so its scores are the ones a replica gives the same frames.

What counts as bad input, refused before anything is written:

* an unknown camera, a missing folder, a folder without ``.png``/``.jpg``/``.jpeg`` files;
* an image that fails the configuration's frame limits (bytes, pixels, side) or does not decode;
* images of different sizes: a camera has one frame size, its regions are placed in that frame's coordinates
  and the record stores it; a set mixing sizes cannot be from one camera;
* a frame that the camera's ROI does not fit (the replicas would dead-letter it);
* a bad image without its mask, or a mask of another size, when a mask folder is given.

Decisions (:mod:`zsad_core.decisions.thresholds`): the image threshold for a target false-reject rate on
goods, or F1-max with bad images; the pixel threshold by F1-max over pixels with masks, else by the same
order-statistic rule on each good map's highest pixel, so that at most about the target fraction of good frames
shows any defect region.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from services.config import ZsadConfig
from services.frame_path.decoding import crop_roi
from zsad_core.decisions import DriftReference, ThresholdChoice, f1_max_threshold, false_reject_threshold
from zsad_core.decisions.drift import BINS
from zsad_core.decisions.thresholds import goods_needed
from zsad_core.errors import ZsadError
from zsad_core.imageio import ImageLimits, image_files, read_image

if TYPE_CHECKING:
    from services.frame_path.camera_method import ResolvedPrompts, ResolvedReferences
    from services.stores.camera_settings import CameraSettingsStore



class CalibrationInputError(ZsadError, ValueError):
    """Calibration images that cannot be used; the message names the folder or file."""

    reason = "bad_calibration_input"


@dataclass(frozen=True)
class LabelledImages:
    """Calibration images of one kind, in file-name order, all of one frame size.

    Attributes:
        source: the folder they were read from.
        names: file names.
        images: ``(H, W, 3)`` uint8 RGB frames.
        masks: ``(H, W)`` bool defect masks, one per image, or ``None``.
    """

    source: str
    names: tuple[str, ...]
    images: tuple[np.ndarray, ...]
    masks: tuple[np.ndarray, ...] | None = None


@dataclass(frozen=True)
class CalibrationDecision:
    """The thresholds chosen for a camera and everything that went into them (the record's evidence)."""

    image: ThresholdChoice
    pixel: ThresholdChoice
    evidence: dict[str, Any]


def read_folder(folder: str | Path, limits: ImageLimits) -> LabelledImages:
    """The images of ``folder`` (not recursive), checked against the frame limits.

    Raises:
        CalibrationInputError: no such folder, or no images in it.
        ImageError: a file fails the limits or does not decode (the message names it).
    """
    files = image_files(folder, CalibrationInputError)
    images = tuple(read_image(str(path), limits) for path in files)
    return LabelledImages(str(Path(folder)), tuple(p.name for p in files), images)


def read_marked_goods(config: ZsadConfig, camera: str, n: int) -> LabelledImages:
    """The newest ``n`` frames of ``camera`` an operator marked good, read back from Kafka as full frames.

    Frames whose result or Kafka record has expired since the mark are skipped; at least one must remain.

    Raises:
        CalibrationInputError: no frame of the camera is marked good, or none of the marked ones is still there.
        ImageError: a frame fails the configuration's frame limits.
    """
    from services.stores.operator_marks import read_marked_frames
    from zsad_core.imageio import decode_image

    if n < 1:
        raise CalibrationInputError(f"--from-stream needs a positive number of frames, got {n}")
    frames = read_marked_frames(config, camera, "good", n)
    names = [frame_id for frame_id, _ in frames]
    images = [decode_image(data, config.limits.image_limits()) for _, data in frames]
    if not images:
        raise CalibrationInputError(f"no frame of {camera} marked good is still stored (results and Kafka records)")
    return LabelledImages(f"stream:{camera}", tuple(names), tuple(images))


def with_masks(bads: LabelledImages, mask_folder: str | Path, limits: ImageLimits) -> LabelledImages:
    """``bads`` with the mask of each image: the ``.png`` of the same stem in ``mask_folder``, non-zero = defect.

    Raises:
        CalibrationInputError: a mask is missing or its size differs from its image's.
    """
    root = Path(mask_folder)
    masks = []
    for name, image in zip(bads.names, bads.images, strict=True):
        path = root / f"{Path(name).stem}.png"
        if not path.is_file():
            raise CalibrationInputError(f"no mask {path} for bad image {name}")
        mask = read_image(str(path), limits)
        if mask.shape[:2] != image.shape[:2]:
            raise CalibrationInputError(f"mask {path} is {_size(mask)}, its image {name} is {_size(image)}")
        masks.append(mask.max(axis=2) > 0)
    return LabelledImages(bads.source, bads.names, bads.images, tuple(masks))


def frame_size(sets: Sequence[LabelledImages], roi: tuple[int, int, int, int] | None) -> tuple[int, int]:
    """The one ``(width, height)`` of every image, checked to hold the ROI.

    Raises:
        CalibrationInputError: sizes differ, or the ROI does not fit the frame.
    """
    sizes: dict[tuple[int, int], str] = {}
    for images in sets:
        for name, image in zip(images.names, images.images, strict=True):
            sizes.setdefault((image.shape[1], image.shape[0]), f"{images.source}/{name}")
    if len(sizes) > 1:
        examples = ", ".join(f"{w}x{h} ({where})" for (w, h), where in sorted(sizes.items()))
        raise CalibrationInputError(f"calibration images must share the camera's frame size; found {examples}")
    (width, height), where = next(iter(sizes.items()))
    if roi is not None and (roi[0] + roi[2] > width or roi[1] + roi[3] > height):
        raise CalibrationInputError(f"the camera's roi {list(roi)} does not fit its {width}x{height} frames ({where})")
    return width, height


class CameraScorer:
    """The camera's method built as a replica builds it (:mod:`services.frame_path.camera_method`), scoring
    calibration frames as a replica receives them: the camera's ROI squashed to the method's input size.

    Args:
        config: the system configuration (serving backbone, weights, precision, batch size).
        camera: the camera id (configured).
        roi: the ROI to apply (the camera's current one).
        prompt_version: the version or alias the camera follows now (``None``: zero-shot prompts).
        prompts: ``prompt_version`` resolved and hash-checked, or ``None`` for zero-shot prompts.
        references: the camera's reference set resolved, or ``None`` for none (zero-shot).
        device: torch device.
    """

    def __init__(
        self,
        config: ZsadConfig,
        camera: str,
        *,
        roi: tuple[int, int, int, int] | None,
        prompt_version: str | None = None,
        prompts: ResolvedPrompts | None = None,
        references: ResolvedReferences | None = None,
        device: str = "cpu",
    ) -> None:
        from services.frame_path.camera_method import MethodBuilder, MethodKey

        key = MethodKey.of_camera(camera, config.camera(camera), prompt_version)
        self.loaded = MethodBuilder(config.serving, device).build(key, prompts, references)
        self.method = self.loaded.module
        self.roi = roi
        self.batch_size = config.serving.max_batch_size

    def score(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(N,)`` and anomaly maps ``(N, S, S)`` of full frames (the ROI is cropped here).

        Raises:
            CalibrationInputError: the method returned a non-finite score or map.
        """
        from services.frame_path.camera_method import model_input

        size = self.method.image_size
        scores, maps = [], []
        for start in range(0, len(frames), self.batch_size):
            batch = [model_input(frame, self.roi, size) for frame in frames[start : start + self.batch_size]]
            result = self.method.predict(batch)
            scores.append(result.scores.float().cpu().numpy())
            maps.append(result.maps.float().cpu().numpy())
        all_scores, all_maps = np.concatenate(scores).astype(np.float64), np.concatenate(maps)
        if not (np.isfinite(all_scores).all() and np.isfinite(all_maps).all()):
            raise CalibrationInputError("the method returned non-finite scores or maps on the calibration images")
        return all_scores, all_maps


def decide(
    good_scores: np.ndarray,
    good_maps: np.ndarray,
    *,
    bad_scores: np.ndarray | None = None,
    bad_maps: np.ndarray | None = None,
    bad_masks: Sequence[np.ndarray] | None = None,
    roi: tuple[int, int, int, int] | None = None,
    false_reject: float = 0.01,
    confidence: float = 0.95,
) -> tuple[ThresholdChoice, ThresholdChoice, dict[str, Any]]:
    """Image and pixel thresholds from scored calibration images (module docstring), and summary numbers.

    Masks are in frame coordinates: each is cropped to ``roi`` and squashed to the map size (bilinear, then
    > 0.5, the evaluation protocol's rule).

    Returns:
        ``(image choice, pixel choice, summary)``; the summary holds score quantiles and drift bins.
    """
    if bad_scores is not None and len(bad_scores):
        image = f1_max_threshold(good_scores, bad_scores, confidence)
    else:
        image = false_reject_threshold(good_scores, false_reject, confidence)
    if bad_maps is not None and bad_masks is not None:
        size = good_maps.shape[-1], good_maps.shape[-2]
        masks = np.stack([_squash_mask(crop_roi(mask[..., None], roi)[..., 0], size) for mask in bad_masks])
        negatives = np.concatenate([good_maps.ravel(), bad_maps[~masks]])
        pixel = f1_max_threshold(negatives, bad_maps[masks], confidence)
    else:
        pixel = false_reject_threshold(good_maps.reshape(len(good_maps), -1).max(axis=1), false_reject, confidence)
    summary: dict[str, Any] = {"good_scores": _quantiles(good_scores)}
    if bad_scores is not None and len(bad_scores):
        summary["bad_scores"] = _quantiles(bad_scores)
    if len(good_scores) >= BINS:
        summary["drift_reference"] = DriftReference.from_scores(good_scores).to_dict()
    summary["goods_needed_for_target"] = goods_needed(false_reject, confidence)
    return image, pixel, summary


def _squash_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) > 0.5


def _quantiles(scores: np.ndarray) -> dict[str, float]:
    values = np.asarray(scores, dtype=np.float64)
    points = {"min": 0.0, "p50": 0.5, "p90": 0.9, "p99": 0.99, "max": 1.0}
    return {"n": int(values.size), **{name: float(np.quantile(values, q)) for name, q in points.items()}}


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}"


def evidence_json(evidence: dict[str, Any]) -> dict[str, Any]:
    """``evidence`` with numpy scalars turned into plain numbers, ready for the record's JSON."""
    return json.loads(json.dumps(evidence, default=lambda value: value.item()))


def serving_artifacts(
    store: CameraSettingsStore, camera: str, prompt_version: str | None
) -> tuple[ResolvedPrompts | None, ResolvedReferences | None]:
    """The prompt artifact (of ``prompt_version``) and reference set a replica of ``camera`` would serve now,
    resolved and hash-checked through the registries as a replica resolves them.

    Raises:
        RegistryError, CorruptArtifactError: a followed version cannot be resolved or is damaged.
    """
    from services.prompt_lifecycle.hot_swap import RegistryPrompts, RegistryReferences
    from services.stores.artifact_registry import reference_registry

    configured = store.config.camera(camera)
    prompts = None
    if prompt_version is not None:
        prompts = RegistryPrompts(store.registry).resolve_prompts(configured.method, prompt_version)
    references = None
    if configured.references is not None:
        registry = RegistryReferences(reference_registry(store.config, store.client))
        references = registry.resolve_references(camera, configured.references)
    return prompts, references


def calibrate_camera(
    store: CameraSettingsStore,
    camera: str,
    *,
    good: str | Path | int,
    bad: str | Path | None = None,
    bad_masks: str | Path | None = None,
    false_reject: float = 0.01,
    confidence: float = 0.95,
    device: str = "cpu",
) -> CalibrationDecision:
    """Read, check and score the calibration images of ``camera`` and decide its thresholds; writes nothing.

    ``good`` is a folder, or a number N: the newest N frames an operator marked good (:func:`read_marked_goods`).

    The camera's current settings (ROI, followed prompt version) come from ``store``; the caller records the
    decision with :meth:`~services.stores.camera_settings.CameraSettingsStore.record_calibration`.

    Raises:
        UnknownCameraError: the camera is not configured.
        CalibrationInputError, ImageError: unusable images (module docstring).
        RegistryError, CorruptArtifactError: the followed prompt version cannot be resolved or is damaged.
        CalibrationError: a rate outside (0, 1).
    """
    config = store.config
    configured = config.camera(camera)
    settings = store.settings(camera)
    limits = config.limits.image_limits()
    goods = read_marked_goods(config, camera, good) if isinstance(good, int) else read_folder(good, limits)
    bads = read_folder(bad, limits) if bad is not None else None
    if bad_masks is not None:
        if bads is None:
            raise CalibrationInputError("masks need bad images (--bad) to belong to")
        bads = with_masks(bads, bad_masks, limits)
    width, height = frame_size([goods] if bads is None else [goods, bads], settings.roi)
    prompts, references = serving_artifacts(store, camera, settings.prompt_version)
    scorer = CameraScorer(config, camera, roi=settings.roi, prompt_version=settings.prompt_version, prompts=prompts,
                          references=references, device=device)  # fmt: skip
    good_scores, good_maps = scorer.score(goods.images)
    bad_scores, bad_maps = scorer.score(bads.images) if bads is not None else (None, None)
    image, pixel, summary = decide(
        good_scores,
        good_maps,
        bad_scores=bad_scores,
        bad_maps=bad_maps,
        bad_masks=bads.masks if bads is not None else None,
        roi=settings.roi,
        false_reject=false_reject,
        confidence=confidence,
    )
    evidence = {
        "method": configured.method,
        "class_name": configured.class_name,
        "follows": settings.prompt_version,
        "prompt_version": scorer.loaded.prompt_version,
        "reference_version": scorer.loaded.reference_version,
        "image_size": scorer.method.image_size,
        "frame_size": [width, height],
        "roi": list(settings.roi) if settings.roi else None,
        "settings_version": settings.version,
        "sources": {"good": goods.source, "bad": bads.source if bads else None, "masks": str(bad_masks or "") or None},
        "image": image.to_dict(),
        "pixel": pixel.to_dict(),
        "pixel_rule": "pixel_f1_max" if bads is not None and bads.masks is not None else "good_map_max",
        **summary,
    }
    return CalibrationDecision(image, pixel, evidence_json(evidence))
