"""Image stages: the backbone forwards a method's head reads, keyed by what decides their output.

Why: the vision tower does not depend on a camera's product. Two methods (or one method set up for two classes,
prompt versions or reference sets) that ask for the same :class:`ImageStage` would compute the same tokens from
the same pixels, so a caller serving many cameras runs each distinct stage once over all their frames
(:func:`encode_shared`) and hands every method its rows; only the heads (text side, references, fusion) run per
method. ``method.predict(images)`` is the same two steps on one method's batch.

A stage is a backbone *instance* (compared by identity: two backbones built alike may hold different weights)
and an :class:`ImageForward`, a frozen description of one forward (taps, V-V path variant, window or view
passes) that also knows how to run it. Methods with an unusual forward define their own kind next to them
(WinCLIP's windows, AnoCLIP's views); equality of the descriptions is what makes stages shared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import torch

from zsad_core.backbone import ClipBackbone, SurgeryConfig, VisionFeatures


class StagedMethod(Protocol):
    """What this module needs of a method (``ZeroShotMethod`` is one), so it never imports the method module."""

    def image_stages(self) -> Sequence[ImageStage]: ...

    def __call__(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

StageOutput: TypeAlias = VisionFeatures | torch.Tensor
StageOutputs: TypeAlias = Mapping["ImageStage", StageOutput]


class ImageForward(Protocol):
    """One kind of backbone forward: a frozen, hashable description that runs itself."""

    def run(self, backbone: ClipBackbone, pixels: torch.Tensor) -> StageOutput:
        """The forward's output for ``(B, 3, S, S)`` normalised pixels; row i belongs to image i."""
        ...


@dataclass(frozen=True)
class TowerPass:
    """The vision tower with taps and an optional V-V path (see :meth:`ClipBackbone.encode_image`).

    Attributes:
        taps: blocks tapped, ascending.
        surgery: the V-V path variant, or None for CLIP's own path alone.
        need_global: run to the end for the global embeddings (else stop after the last tap).
        overwritten_taps: CLIP-AD's official contaminated taps.
    """

    taps: tuple[int, ...] = ()
    surgery: SurgeryConfig | None = None
    need_global: bool = True
    overwritten_taps: bool = False

    def run(self, backbone: ClipBackbone, pixels: torch.Tensor) -> VisionFeatures:
        """Tapped tokens and global embeddings, float32."""
        return backbone.encode_image(pixels, self.taps, self.surgery, self.need_global, self.overwritten_taps)

    def has_clip_taps(self, taps: Iterable[int]) -> bool:
        """Whether CLIP's own-path tokens of ``taps`` are in the output (the V-V path leaves that path alone)."""
        return not self.overwritten_taps and set(taps) <= set(self.taps)


@dataclass(frozen=True)
class WholeMethodPass:
    """A method that overrides only ``forward`` (written before the split): its whole result is its stage.

    Nothing is shared with other methods (equal only for the same instance), but such a method still serves
    beside split ones.
    """

    method: StagedMethod

    def run(self, backbone: ClipBackbone, pixels: torch.Tensor) -> torch.Tensor:
        """``(B, 1 + S*S)`` rows: the score, then the flattened map (one tensor, so rows split like any output)."""
        maps, scores = self.method(pixels)
        return torch.cat([scores.float()[:, None], maps.float().flatten(1)], dim=1)


@dataclass(frozen=True)
class ImageStage:
    """One backbone forward as a key: equal stages give equal outputs for equal pixels.

    Attributes:
        backbone: the backbone instance (compared by identity; its ``identity`` names arch, weights and size).
        forward: what runs on it.
    """

    backbone: ClipBackbone
    forward: ImageForward

    def run(self, pixels: torch.Tensor) -> StageOutput:
        """The output of the forward on ``pixels``."""
        return self.forward.run(self.backbone, pixels)

    def __repr__(self) -> str:
        return f"ImageStage({self.backbone.identity}, {self.forward!r})"


def run_stages(stages: Iterable[ImageStage], pixels: torch.Tensor) -> dict[ImageStage, StageOutput]:
    """Each distinct stage of ``stages`` run once on ``pixels``."""
    return {stage: stage.run(pixels) for stage in dict.fromkeys(stages)}


def take_rows(output: StageOutput, rows: slice) -> StageOutput:
    """The rows (images) ``rows`` of a stage output, every tensor of a :class:`VisionFeatures` included."""
    if isinstance(output, torch.Tensor):
        return output[rows]

    def part(tensors: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        return {tap: tensor[rows] for tap, tensor in tensors.items()}

    return VisionFeatures(
        raw=part(output.raw),
        projected=part(output.projected),
        vv_raw=part(output.vv_raw),
        vv_projected=part(output.vv_projected),
        global_embedding=None if output.global_embedding is None else output.global_embedding[rows],
        global_embedding_no_ln=None if output.global_embedding_no_ln is None else output.global_embedding_no_ln[rows],
        grid=output.grid,
    )


@dataclass(frozen=True)
class SharedStages:
    """What :func:`encode_shared` computed for several methods' batches.

    Attributes:
        outputs: per batch, in the order given, its rows of every stage its method reads.
        forward_sizes: per distinct stage run, the frames it ran on (one entry per forward).
    """

    outputs: list[dict[ImageStage, StageOutput]]
    forward_sizes: dict[ImageStage, int]


def encode_shared(batches: Sequence[tuple[StagedMethod, torch.Tensor]]) -> SharedStages:
    """Run every distinct image stage once over the pixels of all the batches whose method reads it.

    Args:
        batches: ``(method, pixels)`` pairs; pixels are normalised ``(B, 3, S, S)`` at the method's backbone size
            (``method.pixels(images)``). Methods that share a stage share its backbone, so their pixels stack.

    Returns:
        Each batch's rows of its stages, and the frames of each forward (for batch-size metrics).
    """
    needs: dict[ImageStage, list[int]] = {}
    for index, (method, _) in enumerate(batches):
        for stage in dict.fromkeys(method.image_stages()):
            needs.setdefault(stage, []).append(index)
    outputs: list[dict[ImageStage, StageOutput]] = [{} for _ in batches]
    sizes: dict[ImageStage, int] = {}
    with torch.inference_mode():
        for stage, indices in needs.items():
            pixels = [batches[index][1] for index in indices]
            output = stage.run(pixels[0] if len(pixels) == 1 else torch.cat(pixels))
            sizes[stage] = sum(len(part) for part in pixels)
            start = 0
            for index, part in zip(indices, pixels, strict=True):
                outputs[index][stage] = take_rows(output, slice(start, start + len(part)))
                start += len(part)
    return SharedStages(outputs, sizes)
