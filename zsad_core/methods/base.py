"""The interface every method implements, and the plumbing they share.

A method is a plain ``nn.Module`` holding only its own small weights (prompts, heads, caches); the CLIP
backbone is *referenced*, not registered as a child, so several methods share one backbone instance and a
method's ``state_dict()`` holds exactly the weights an artifact must carry. Training loops and Serve replicas
wrap methods; methods know nothing of either.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from zsad_core.backbone import ClipBackbone
from zsad_core.methods.ops import quarter_taps
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, WholeMethodPass, run_stages
from zsad_core.preprocess import preprocess


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """Fields every method config has; methods subclass this with their own defaults.

    Attributes:
        backbone: ``arch:tag`` of the official backbone (used when ``load_method`` builds one).
        image_size: input size the official method runs at.
        taps: vision blocks to tap; None means the quarter points of the backbone (the papers' choice).
        backbone_activation: activation of a backbone built for this method (``gelu`` for VCP-CLIP).
        pos_interpolation: position-embedding interpolation of a backbone built for this method.
    """

    backbone: str = "ViT-L-14-336:openai"
    image_size: int = 518
    taps: tuple[int, ...] | None = None
    backbone_activation: str = "default"
    pos_interpolation: str = "bicubic"

    # Config fields that change the features learned weights see: weights trained with one value are wrong under
    # another, so an artifact recording a different value is refused (zsad_core.artifacts.check_compatible).
    feature_flags: ClassVar[tuple[str, ...]] = ("backbone_activation", "pos_interpolation")


class ZeroShotMethod(nn.Module):
    """Base class: holds the backbone reference, the config and the class set-up.

    Subclasses split inference in two (:mod:`zsad_core.methods.stages`): :meth:`image_stages`, the backbone
    forwards they read, keyed so that other methods and classes asking for the same share them, and :meth:`head`,
    which turns those outputs into an :class:`AnomalyResult` for the set-up class, prompts and references.
    (A subclass may instead override :meth:`forward` alone; it then shares no forward.) Subclasses with
    class-dependent text features implement :meth:`_build_class_state`. Learnable subclasses set
    ``learnable = True`` and implement :meth:`loss` and :meth:`configure_optimizer`.
    """

    name: ClassVar[str] = ""
    learnable: ClassVar[bool] = False
    uses_class_name: ClassVar[bool] = False

    def __init__(self, backbone: ClipBackbone, config: MethodConfig) -> None:
        super().__init__()
        object.__setattr__(self, "_backbone", backbone)  # referenced, not a child module: see module docstring
        self.config = config
        self.taps = tuple(config.taps) if config.taps else quarter_taps(backbone.num_layers)
        if not all(1 <= t <= backbone.num_layers for t in self.taps):
            raise ValueError(f"{self.name}: taps {self.taps} do not fit a {backbone.num_layers}-block backbone")
        self.class_name: str | None = None
        self.domain: str = "object"

    @property
    def backbone(self) -> ClipBackbone:
        """The shared CLIP backbone."""
        return self._backbone

    @property
    def image_size(self) -> int:
        """Input side in pixels; maps come back at this size."""
        return self.backbone.image_size

    # -- class set-up ----------------------------------------------------------------------------------------
    def setup(self, class_name: str = "object", domain: str = "object") -> ZeroShotMethod:
        """Prepare class-dependent state (text features of prompt ensembles), cached until the next call.

        Args:
            class_name: product name used in prompts ("object" when unknown); ignored by class-agnostic methods.
            domain: ``object`` or ``texture`` (AnoCLIP's domain-aware prompts).
        """
        if domain not in ("object", "texture"):
            raise ValueError(f"domain must be 'object' or 'texture', got {domain!r}")
        self.class_name, self.domain = class_name, domain
        with torch.no_grad():
            self._build_class_state()
        return self

    def _build_class_state(self) -> None:
        """Encode whatever depends on the class name; class-agnostic methods keep the default (nothing)."""

    def _require_setup(self) -> None:
        if self.class_name is None:
            raise RuntimeError(f"{self.name}: call setup(class_name) before predicting (load_method does this)")

    # -- inference -------------------------------------------------------------------------------------------
    def image_stages(self) -> tuple[ImageStage, ...]:
        """The backbone forwards :meth:`head` reads; equal stages of other methods are run once for all.

        The default makes a method that overrides only :meth:`forward` its own stage (shared with nothing).
        """
        if type(self).forward is ZeroShotMethod.forward:
            raise NotImplementedError(f"{self.name} implements neither image_stages/head nor forward")
        return (ImageStage(self.backbone, WholeMethodPass(self)),)

    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """Maps and scores from the outputs of :meth:`image_stages` (at least those; rows = images)."""
        (stage,) = self.image_stages()
        rows = outputs[stage]
        return AnomalyResult(rows[:, 1:].unflatten(1, (self.image_size, self.image_size)), rows[:, 0])

    def forward(self, pixels: torch.Tensor) -> AnomalyResult:
        """Anomaly maps and scores of ``(B, 3, S, S)`` normalised pixels: the image stages, then the head."""
        return self.head(run_stages(self.image_stages(), pixels))

    def pixels(self, images: torch.Tensor | Sequence[np.ndarray | bytes]) -> torch.Tensor:
        """Normalised ``(B, 3, S, S)`` pixels on the backbone's device.

        Args:
            images: normalised pixels (moved as they are), or RGB uint8 arrays / encoded JPEG-PNG bytes, which are
                squashed to S x S with the backbone's normalisation.
        """
        device = torch.device(self.backbone.device)
        if not isinstance(images, torch.Tensor):
            images, _ = preprocess(images, self.backbone.preprocess_config())
            if device.type == "cuda":
                # Page-locked host memory lets the copy run asynchronously (DMA) instead of staging it.
                images = images.pin_memory()
        return images.to(device, non_blocking=device.type == "cuda")

    def predict(self, images: torch.Tensor | Sequence[np.ndarray | bytes]) -> AnomalyResult:
        """Maps and scores of a batch, in inference mode and eval mode (no prompt dropout; mode restored after).

        Args:
            images: see :meth:`pixels`.
        """
        self._require_setup()
        pixels = self.pixels(images)
        with self._evaluating(), torch.inference_mode():
            maps, scores = self(pixels)
        return AnomalyResult(maps.float(), scores.float())

    def predict_head(self, outputs: StageOutputs) -> AnomalyResult:
        """:meth:`head` as :meth:`predict` runs it: inference and eval mode (restored after), float32 results.

        Why public: a caller that ran the stages of several methods at once (:func:`encode_shared`) finishes each.
        """
        self._require_setup()
        with self._evaluating(), torch.inference_mode():
            maps, scores = self.head(outputs)
        return AnomalyResult(maps.float(), scores.float())

    @contextlib.contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode inside the block (no prompt dropout), the previous mode restored after."""
        was_training = self.training
        self.eval()
        try:
            yield
        finally:
            self.train(was_training)

    # -- training --------------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters a training loop may update (never the backbone's)."""
        return [p for p in self.parameters() if p.requires_grad]

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training loss of a batch ``{"pixels": (B,3,S,S), "masks": (B,S,S) 0/1, "labels": (B,)}``."""
        raise NotImplementedError(f"{self.name} has no learnable weights")

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """The official optimiser and learning rates of the method."""
        raise NotImplementedError(f"{self.name} has no learnable weights")

    # -- description -----------------------------------------------------------------------------------------
    def own_nbytes(self) -> int:
        """Bytes of this method's own tensors (text features, learned prompts, buffers), the shared backbone's left
        out: what one more loaded method costs a process that already holds the backbone."""
        return tensor_nbytes(self, shared=self.backbone)

    def describe(self) -> dict[str, Any]:
        """What an artifact manifest records about this method instance (compatibility is checked on it)."""
        return {
            "method": self.name,
            "backbone": self.backbone.identity,
            "taps": list(self.taps),
            "image_size": self.image_size,
            "config": {k: v for k, v in dataclasses.asdict(self.config).items() if k not in ("backbone",)},
        }


def tensor_nbytes(module: nn.Module, shared: nn.Module | None = None) -> int:
    """Bytes of ``module``'s parameters and buffers, each storage counted once, those of ``shared`` left out.

    Why storages: a buffer may be a view of another tensor, or of the shared module's weights; memory is what the
    storages hold, not the sum of the views.
    """
    excluded = set()
    if shared is not None:
        excluded = {tensor.untyped_storage().data_ptr() for tensor in (*shared.parameters(), *shared.buffers())}
    storages = {}
    for tensor in (*module.parameters(), *module.buffers()):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in excluded:
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())
