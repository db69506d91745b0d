"""Building a camera's method exactly as serving scores with it: the one place that turns a camera into a model.

Why one builder: a replica, a calibration and a reference-set build must see the same backbone (architecture,
weights, precision, input size), the same method and options, the same prompt version and reference memory, and
the same pixels (the camera's ROI squashed to the input size). Any difference between them makes a threshold or
a reference set describe another model than the one served, silently.

Why every build draws its random weights from seed 0 in a forked RNG: without a weight file (the demo, the
tests) the CLIP weights and untrained prompts are random; they must be the same in every replica and in every
calibration, whatever was built before, and building must not reseed the process's global RNG.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from services.config import CameraConfig, ServingConfig
from services.frame_path.decoding import crop_roi
from zsad_core.backbone import BackboneConfig, ClipBackbone, build_backbone
from zsad_core.few_shot import FewShotMethod, FusionOptions, load_memory
from zsad_core.imageio import resize_rgb
from zsad_core.methods import ZeroShotMethod, get_method_config, load_method, method_backbone_config

SEED = 0


@dataclass(frozen=True)
class ResolvedPrompts:
    """A prompt artifact chosen for a camera: the concrete version (never an alias) and its files."""

    version: str
    path: Path


class PromptSource(Protocol):
    """Where prompt versions and aliases are resolved to artifacts (the prompt registry)."""

    def resolve_prompts(self, method: str, version_or_alias: str) -> ResolvedPrompts:
        """The artifact that ``version_or_alias`` of ``method`` names now."""
        ...


@dataclass(frozen=True)
class ResolvedReferences:
    """A camera's reference set chosen in the registry: the concrete version (``r2``) and its files."""

    version: str
    path: Path


class ReferenceSource(Protocol):
    """Where cameras' reference set versions and aliases are resolved (the reference registry)."""

    def resolve_references(self, camera: str, version_or_alias: str) -> ResolvedReferences | None:
        """The set ``version_or_alias`` of ``camera`` names now; ``None`` for an alias not set yet (zero-shot)."""
        ...


@dataclass(frozen=True)
class MethodKey:
    """What makes two cameras share one method instance (and one batch)."""

    method: str
    class_name: str
    domain: str
    image_size: int | None
    prompt_version: str | None
    options: str = "{}"  # the camera's method options as canonical JSON (hashable)
    references: tuple[str, str] | None = None  # (camera, version or alias): reference sets belong to one camera
    fusion: str = "{}"  # the camera's few-shot fusion options as canonical JSON, when it has references

    @classmethod
    def of_camera(cls, camera_id: str, camera: CameraConfig, prompt_version: str | None) -> MethodKey:
        """The key of ``camera`` following ``prompt_version`` (its live one, which may differ from the file's)."""
        references = (camera_id, camera.references) if camera.references is not None else None
        fusion = json.dumps(camera.few_shot.model_dump(), sort_keys=True) if references is not None else "{}"
        return cls(camera.method, camera.class_name, camera.domain, camera.image_size, prompt_version,
                   json.dumps(camera.options, sort_keys=True), references, fusion)  # fmt: skip

    def overrides(self) -> dict[str, object]:
        """The method options the camera sets, its input size included."""
        return {**json.loads(self.options), **({"image_size": self.image_size} if self.image_size else {})}


@dataclass
class LoadedMethod:
    """A method ready to score, with the resolved prompt and reference set versions it runs."""

    module: ZeroShotMethod
    prompt_version: str | None
    reference_version: str | None = None


def backbone_config(serving: ServingConfig, key: MethodKey, device: str = "cpu") -> BackboneConfig:
    """The backbone serving builds for ``key``: the serving backbone, weights and precision at the method's size."""
    return method_backbone_config(get_method_config(key.method, **key.overrides()), serving.backbone,
                                  pretrained=serving.pretrained, weights=serving.backbone_weights, device=device,
                                  precision=serving.precision)  # fmt: skip


class MethodBuilder:
    """Builds cameras' methods on shared backbones: one backbone per distinct :class:`BackboneConfig`.

    Args:
        serving: the serving settings (backbone, weights, precision).
        device: torch device of the backbones.
        on_backbone: called with each backbone built, once.
    """

    def __init__(
        self,
        serving: ServingConfig,
        device: str = "cpu",
        on_backbone: Callable[[BackboneConfig, ClipBackbone], None] | None = None,
    ) -> None:
        self.serving = serving
        self.device = device
        self.backbones: dict[BackboneConfig, ClipBackbone] = {}
        self._on_backbone = on_backbone  # told of each backbone built (the replica reports where its weights came from)

    def build(
        self, key: MethodKey, prompts: ResolvedPrompts | None, references: ResolvedReferences | None = None
    ) -> LoadedMethod:
        """The method of ``key`` with ``prompts`` (``None``: zero-shot prompts) and the reference memory of
        ``references`` (``None``: no few-shot fusion).

        Raises:
            IncompatibleWeightsError, CorruptArtifactError: the prompt artifact does not fit or is damaged.
            IncompatibleReferencesError: the set was built on another backbone or input size, or its files are bad.
        """
        config = backbone_config(self.serving, key, self.device)
        if config not in self.backbones:
            with _seeded(self.device):
                self.backbones[config] = build_backbone(config)
            if self._on_backbone is not None:
                self._on_backbone(config, self.backbones[config])
        weights, version = (prompts.path, prompts.version) if prompts is not None else (None, None)
        with _seeded(self.device):
            module = load_method(key.method, backbone=self.backbones[config], weights=weights,
                                 class_name=key.class_name, domain=key.domain, **key.overrides())  # fmt: skip
        return with_references(key, LoadedMethod(module, version), references)


def with_references(key: MethodKey, loaded: LoadedMethod, resolved: ResolvedReferences | None) -> LoadedMethod:
    """``loaded``'s method (unwrapped) with the memory of ``resolved``, or zero-shot for ``None``.

    Raises:
        IncompatibleReferencesError: the set was built on another backbone or input size, or its files are bad.
    """
    base = loaded.module.method if isinstance(loaded.module, FewShotMethod) else loaded.module
    if resolved is None:
        return LoadedMethod(base, loaded.prompt_version)
    fused = FewShotMethod(base, load_memory(resolved.path, base.backbone), FusionOptions(**json.loads(key.fusion)))
    return LoadedMethod(fused, loaded.prompt_version, resolved.version)


def keep_references(replacement: LoadedMethod, serving: LoadedMethod) -> LoadedMethod:
    """``replacement`` (new prompts) scoring with the reference memory ``serving`` scores with, if any."""
    if not isinstance(serving.module, FewShotMethod):
        return replacement
    module = FewShotMethod(replacement.module, serving.module.memory, serving.module.fusion)
    return LoadedMethod(module, replacement.prompt_version, serving.reference_version)


def model_input(frame: np.ndarray, roi: tuple[int, int, int, int] | None, size: int) -> np.ndarray:
    """A decoded full frame as a replica receives it from ingest: the ROI squashed to ``size`` x ``size``.

    These are the pixels :func:`zsad_core.imageio.decode_model_input` gives for a PNG, or a JPEG region under
    four times the input size (the bicubic squash of the cropped full decode).

    Raises:
        RoiOutsideFrameError: the ROI does not lie inside the frame.
    """
    return resize_rgb(crop_roi(frame, roi), size, size)


@contextmanager
def _seeded(device: str) -> Iterator[None]:
    """Random draws from seed ``SEED`` inside, the caller's RNG state untouched outside."""
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(SEED)
        yield
