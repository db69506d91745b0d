"""``FewShotMethod``: any zero-shot method plus a reference memory, itself a method.

The wrapper runs the wrapped method's head unchanged, computes the nearest-neighbour distance map of the
patch tokens the method's own image stage tapped (a forward of its own only when the method taps others)
against the memory, brings it to the method's input size (bilinear, then the Gaussian the CLIP few-shot papers
apply to their final maps) and fuses maps and scores (:mod:`zsad_core.few_shot.fusion`).
It returns the same :class:`AnomalyResult`, so evaluation and serving need no change to use references.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from zsad_core.backbone import VisionFeatures
from zsad_core.few_shot.fusion import MAP_FUSIONS, SCORE_FUSIONS, MapFusion, ScoreFusion, fuse_maps, fuse_scores
from zsad_core.few_shot.memory import (
    IncompatibleReferencesError,
    MemoryOptions,
    ReferenceMemory,
    build_memory,
    memory_tokens,
)
from zsad_core.methods.base import ZeroShotMethod
from zsad_core.methods.ops import gaussian_blur
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass


@dataclass(frozen=True)
class FusionOptions:
    """How the few-shot map joins the zero-shot result.

    Attributes:
        map_fusion: ``mean`` or ``harmonic`` (see :mod:`zsad_core.few_shot.fusion`).
        score_fusion: ``mean`` or ``few_shot_max``.
        weight: the few-shot share in both fusions, in [0, 1]; 0.5 is WinCLIP+'s plain average.
        sigma: Gaussian smoothing of the upsampled distance map in pixels (APRIL-GAN and AnomalyCLIP use 4).
    """

    map_fusion: MapFusion = "mean"
    score_fusion: ScoreFusion = "mean"
    weight: float = 0.5
    sigma: float = 4.0

    def __post_init__(self) -> None:
        if self.map_fusion not in MAP_FUSIONS or self.score_fusion not in SCORE_FUSIONS:
            raise ValueError(f"map_fusion must be one of {MAP_FUSIONS} and score_fusion one of {SCORE_FUSIONS}")
        if not 0.0 <= self.weight <= 1.0 or self.sigma < 0:
            raise ValueError(f"weight must lie in [0, 1] and sigma be >= 0, got {self.weight}, {self.sigma}")


class FewShotMethod(ZeroShotMethod):
    """A method with references: ``FewShotMethod(load_method("clip-ad"), memory)``.

    Args:
        method: the zero-shot method (its backbone, set-up and weights are used as they are).
        memory: a :class:`ReferenceMemory` built or loaded for ``method``'s backbone and input size.
        fusion: see :class:`FusionOptions`; None = defaults.

    Raises:
        IncompatibleReferencesError: the memory was built on another backbone or input size.
    """

    def __init__(self, method: ZeroShotMethod, memory: ReferenceMemory, fusion: FusionOptions | None = None):
        super().__init__(method.backbone, method.config)
        if memory.backbone != method.backbone.identity or memory.image_size != method.image_size:
            raise IncompatibleReferencesError(
                f"reference memory of {memory.backbone} at {memory.image_size} px does not fit "
                f"{method.name} on {method.backbone.identity} at {method.image_size} px"
            )
        self.name = method.name
        self.method = method
        self.taps = method.taps
        self.memory = memory.to(method.backbone.device)
        self.fusion = fusion or FusionOptions()
        self.class_name, self.domain = method.class_name, method.domain

    def _build_class_state(self) -> None:
        self.method.setup(self.class_name, self.domain)

    def _memory_stage(self) -> ImageStage:
        """The stage the memory's patch tokens come from: the wrapped method's own forward when it taps them on
        CLIP's path (no second tower forward), else a forward of CLIP's path to the memory's last tap."""
        for stage in self.method.image_stages():
            if isinstance(stage.forward, TowerPass) and stage.forward.has_clip_taps(self.memory.taps):
                return stage
        return ImageStage(self.backbone, TowerPass(self.memory.taps, need_global=False))

    def image_stages(self) -> tuple[ImageStage, ...]:
        """The wrapped method's stages, and the memory's when none of them holds its tokens."""
        return tuple(dict.fromkeys((*self.method.image_stages(), self._memory_stage())))

    def few_shot_map(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, S, S)`` nearest-neighbour distance map of normalised pixels at the input size, smoothed."""
        return self._few_shot_map(self._memory_stage().run(pixels))

    def _few_shot_map(self, features: VisionFeatures) -> torch.Tensor:
        tokens = memory_tokens(features, self.memory.taps, self.memory.feature)
        distances = self.memory.distance_map(tokens, features.grid)
        size = self.image_size
        upsampled = F.interpolate(distances[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0]
        return gaussian_blur(upsampled, self.fusion.sigma)

    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """The wrapped method's result fused with the memory's distances, same shapes and types."""
        maps, scores = self.method.head(outputs)
        few_shot = self._few_shot_map(outputs[self._memory_stage()])
        fused = fuse_maps(maps.float(), few_shot, self.fusion.map_fusion, self.fusion.weight)
        return AnomalyResult(fused, fuse_scores(scores.float(), few_shot, self.fusion.score_fusion, self.fusion.weight))

    def own_nbytes(self) -> int:
        """The wrapped method's own tensors plus the reference memory's banks."""
        return super().own_nbytes() + self.memory.nbytes

    def describe(self) -> dict[str, Any]:
        """The wrapped method's description plus the memory and fusion it scores with."""
        return {
            **self.method.describe(),
            "references": self.memory.describe(),
            "fusion": {"map": self.fusion.map_fusion, "score": self.fusion.score_fusion,
                       "weight": self.fusion.weight, "sigma": self.fusion.sigma},
        }


def with_references(
    method: ZeroShotMethod,
    images: torch.Tensor | Sequence[np.ndarray | bytes],
    memory: MemoryOptions | None = None,
    fusion: FusionOptions | None = None,
) -> FewShotMethod:
    """``method`` with a memory built from ``images`` (normal references of the class it is set up for).

    Args:
        method: a loaded, set-up method.
        images: k reference images: normalised ``(K, 3, S, S)`` pixels, RGB uint8 arrays or encoded bytes.
        memory: taps (default: the method's), feature kind, distance and bound of the memory; None = defaults.
        fusion: how the few-shot map joins the zero-shot result; None = defaults.
    """
    built = build_memory(method.backbone, images, method.taps, memory or MemoryOptions(), class_name=method.class_name)
    return FewShotMethod(method, built, fusion or FusionOptions())
