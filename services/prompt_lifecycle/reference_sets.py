"""Few-shot reference sets per camera as registry artifacts: built from good frames, versioned ``r1, r2, ...``.

Why the registry of the prompts: a camera's reference set changes what its scores mean exactly as a prompt
version does, so it needs the same guarantees: an immutable, hash-checked copy; aliases with history for promotion
and rollback; an audit; a channel the replicas follow. The registry holds it as the kind
:data:`~services.stores.artifact_registry.REFERENCES` (:func:`~services.stores.artifact_registry.reference_registry`),
in the same kind of artifact store as the prompts (:func:`~services.stores.artifact_store.store_root_beside`:
``<registry.root>/references/<camera>/r<N>/`` for a directory or URL; the registry's Redis for ``redis://``), under
the namespace ``<registry.namespace>:references`` and with node copies under ``<registry.cache_dir>/references``.

Why the reference images go through the ingest path's decoding (:func:`model_inputs`): the memory compares
patches of stream frames with patches of the references, so both must show the same pixels: the camera's ROI
squashed to the method's input size by :func:`zsad_core.imageio.decode_model_input`, after the same frame
limits. Bad input is refused before anything is registered: no images, an image over the limits or not
decodable, an ROI that does not fit an image.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from services.config import ZsadConfig
from services.frame_path.decoding import model_input_sizes
from services.stores.artifact_registry import ArtifactRegistry, RegistryEntry
from zsad_core.errors import ImageError, ZsadError
from zsad_core.imageio import ImageLimits, decode_model_input, image_files, plan_model_input, probe_image

if TYPE_CHECKING:
    from zsad_core.few_shot import MemoryOptions

class ReferenceInputError(ZsadError, ValueError):
    """Reference images that cannot be used: none found, or one the camera's ROI does not fit."""

    reason = "bad_reference_input"


@dataclass(frozen=True)
class ReferenceImages:
    """Encoded reference images and where they came from (recorded as the artifact's ``training_data``)."""

    source: str
    names: tuple[str, ...]
    payloads: tuple[bytes, ...]


def images_from_folder(folder: str | Path) -> ReferenceImages:
    """The ``.png``/``.jpg``/``.jpeg`` files of ``folder`` (not recursive), in name order, undecoded.

    Raises:
        ReferenceInputError: no such folder, or no images in it.
    """
    files = image_files(folder, ReferenceInputError)
    payloads = tuple(path.read_bytes() for path in files)
    return ReferenceImages(f"folder:{Path(folder).resolve()}", tuple(path.name for path in files), payloads)


def images_from_marked(config: ZsadConfig, camera: str, n: int) -> ReferenceImages:
    """The newest ``n`` frames of ``camera`` an operator marked good, read back from Kafka as produced.

    Frames whose result or record has expired since the mark are skipped; at least one must remain.

    Raises:
        ReferenceInputError: ``n`` is not positive, or no marked frame is still stored.
    """
    from services.stores.operator_marks import read_marked_frames

    if n < 1:
        raise ReferenceInputError(f"--from-marked needs a positive number of frames, got {n}")
    frames = read_marked_frames(config, camera, "good", n)
    names = [frame_id for frame_id, _ in frames]
    payloads = [data for _, data in frames]
    if not payloads:
        raise ReferenceInputError(f"no frame of {camera} marked good is still stored (results and Kafka records)")
    return ReferenceImages(f"marked:{camera}:{len(payloads)}", tuple(names), tuple(payloads))


def model_inputs(
    images: ReferenceImages, roi: tuple[int, int, int, int] | None, size: int, limits: ImageLimits
) -> list[np.ndarray]:
    """Each image as a replica sees a frame: limits checked, the ROI squashed to ``size`` x ``size`` RGB.

    Raises:
        ImageError: an image fails the limits or does not decode (its ``reason``; the message names the image).
        ReferenceInputError: the ROI does not lie inside an image.
    """
    inputs = []
    for name, payload in zip(images.names, images.payloads, strict=True):
        try:
            fmt, width, height = probe_image(payload, limits)
            if roi is not None and (roi[0] + roi[2] > width or roi[1] + roi[3] > height):
                raise ReferenceInputError(f"{name}: the camera's roi {list(roi)} does not fit a {width}x{height} image")
            inputs.append(decode_model_input(payload, plan_model_input(fmt, width, height, size, roi), limits))
        except ImageError as exc:
            error = type(exc)(f"{images.source}/{name}: {exc}")
            error.reason = exc.reason
            raise error from exc
    return inputs


def build_reference_set(
    config: ZsadConfig,
    camera: str,
    images: ReferenceImages,
    registry: ArtifactRegistry,
    *,
    options: MemoryOptions | None = None,
    actor: str,
    device: str = "cpu",
) -> RegistryEntry:
    """Encode ``images`` with the camera's backbone and taps and register the memory as a new version.

    The camera's method is built as a replica builds it (backbone, weights, precision, input size, options) and
    the images are cut with the camera's live ROI, as ingest cuts frames now; its manifest records the camera,
    the ROI and the images' names, so a version says what it was made from.

    Raises:
        UnknownCameraError: ``camera`` is not configured.
        ImageError, ReferenceInputError: see :func:`model_inputs`; nothing is registered.
        redis.RedisError: the camera's live settings cannot be read.
    """
    from services.frame_path.camera_method import MethodBuilder, MethodKey
    from services.stores.camera_settings import CameraSettingsStore
    from zsad_core.few_shot import MemoryOptions, build_memory, save_memory

    settings = config.camera(camera)
    # The ROI ingest cuts now (the live settings'), not the configured one: references show what is served.
    live = CameraSettingsStore(ArtifactRegistry.from_config(config.registry, registry.client), config)
    roi = live.settings(camera).roi
    size = model_input_sizes({camera: settings})[camera]
    inputs = model_inputs(images, roi, size, config.limits.image_limits())
    # The memory holds backbone features: the prompts a replica follows do not change them.
    method = MethodBuilder(config.serving, device).build(MethodKey.of_camera(camera, settings, None), None).module
    memory = build_memory(method.backbone, inputs, method.taps, options or MemoryOptions(),
                          class_name=settings.class_name, batch_size=config.serving.max_batch_size)  # fmt: skip
    extra = {"camera": camera, "roi": list(roi) if roi else None, "images": list(images.names),
             "source": images.source}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="zsad-references-") as staging:
        save_memory(memory, Path(staging) / "set", extra)
        return registry.register(Path(staging) / "set", training_data=images.source, created_by=actor)


def serving_identity(config: ZsadConfig, camera: str) -> tuple[str, int]:
    """``(backbone identity, input size)`` that the camera's replicas score with, without building a model."""
    from services.frame_path.camera_method import MethodKey, backbone_config
    from zsad_core.backbone.architectures import parse_backbone_name

    settings = config.camera(camera)
    backbone = backbone_config(config.serving, MethodKey.of_camera(camera, settings, None))
    size = int(backbone.image_size or 0)
    return f"{parse_backbone_name(backbone.name)}@{size}", size


def check_fits_camera(entry: RegistryEntry, config: ZsadConfig, camera: str) -> None:
    """Raise unless ``entry`` was built on the backbone and input size the camera is served with.

    Raises:
        IncompatibleReferencesError: another backbone or input size (the memory's distances would be meaningless).
    """
    from zsad_core.few_shot import IncompatibleReferencesError

    identity, size = serving_identity(config, camera)
    if (entry.backbone, entry.image_size) != (identity, size):
        raise IncompatibleReferencesError(
            f"reference set {camera} {entry.version} was built on {entry.backbone} at {entry.image_size} px; "
            f"{camera} is served on {identity} at {size} px"
        )


def alias_history(registry: ArtifactRegistry, camera: str, alias: str) -> list[str]:
    """The versions ``alias`` of ``camera`` pointed to, oldest first (the last one is current)."""
    history = registry.client.lrange(registry.alias_key(camera, alias), 0, -1)
    return [version.decode() if isinstance(version, bytes) else version for version in history]

