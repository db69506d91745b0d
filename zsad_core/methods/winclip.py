"""WinCLIP, zero-shot (Jeong et al., CVPR 2023; docs/methods.md, WinCLIP).

CLIP scores the whole image and every sliding window of patches against two prompt-ensemble text vectors
("normal" and "anomalous" states of the product). Each window is embedded as an image of its own: CLS plus
the window's patch tokens (with their position embeddings) go through the full ViT. A patch's score at one
window size is the harmonic mean of the scores of all windows covering it; the map is the harmonic mean of
the image score and the per-size maps, upsampled bilinearly. No training, no reference images.

Reference behaviour is anomalib's ``WinClip`` (``k_shot=0``), with its problems fixed:

* the prompt templates are the paper's 22 ``a``/``the`` pairs, written here without duplicates (anomalib
  lists "a jpeg corrupted photo of the {}." twice and lacks "a cropped photo of a {}.");
* window embeddings come from the backbone's public :meth:`ClipBackbone.encode_token_subsets`, so there is
  no forward hook piling up on every call, no private ``_global_pool`` and no sequence-first permute that
  breaks on batch-first open_clip;
* windows and their coverage are built from the backbone's own patch grid, so any input size works, and
  the per-patch harmonic mean is one matrix product instead of a Python loop over patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from zsad_core.backbone import ClipBackbone
from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.ops import harmonic_mean, upsample
from zsad_core.methods.prompting import (
    WINCLIP_TEMPLATES,
    Averaging,
    average_ensemble,
    build_sentences,
    encode_sentences,
)
from zsad_core.methods.registry import register_method
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass

# State words of the compositional prompt ensemble (paper Fig. 6 / anomalib ``prompting.py``): 7 normal, 4 anomalous.
NORMAL_STATES: tuple[str, ...] = (
    "{}",
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
)
ANOMALOUS_STATES: tuple[str, ...] = ("damaged {}", "{} with flaw", "{} with defect", "{} with damage")

TEMPLATES: tuple[str, ...] = WINCLIP_TEMPLATES

# Below this a class probability would make 1/score overflow float32 in the harmonic means (0 * inf = NaN in
# the coverage product). Reached only with a temperature far below 0.07, where exp(-2/T) underflows.
_MIN_SCORE = 1e-30


@dataclass(frozen=True)
class WinClipConfig(MethodConfig):
    """Official zero-shot WinCLIP settings (anomalib ``WinClipModel`` defaults unless noted).

    Attributes:
        backbone: OpenCLIP ViT-B/16+ at 240 px with LAION-400M epoch-31 weights (anomalib ``BACKBONE`` /
            ``PRETRAINED``); its OpenAI mean/std come with the weight source.
        image_size: 240, the size the backbone was trained at (anomalib forces it); other sizes work here
            because windows are built from the backbone's grid.
        window_sizes: window sides in patches (anomalib ``scales=(2, 3)``; the paper's small and mid scales).
        window_stride: step between windows in patches (anomalib ``make_masks(..., stride=1)``).
        temperature: softmax temperature on cosine similarity (anomalib ``TEMPERATURE``, CLIP's 0.07; eq. 1).
        normal_states: state words of the normal ensemble (paper Fig. 6 / anomalib).
        anomalous_states: state words of the anomalous ensemble (paper Fig. 6 / anomalib).
        templates: template-level prompts; the paper's 22 (anomalib has 21 with one duplicate).
        averaging: unnormalised sentence embeddings are averaged, then normalised (anomalib averages raw
            embeddings and normalises in its cosine similarity).
    """

    backbone: str = "ViT-B-16-plus-240:laion400m_e31"
    image_size: int = 240
    window_sizes: tuple[int, ...] = (2, 3)
    window_stride: int = 1
    temperature: float = 0.07
    normal_states: tuple[str, ...] = NORMAL_STATES
    anomalous_states: tuple[str, ...] = ANOMALOUS_STATES
    templates: tuple[str, ...] = TEMPLATES
    averaging: Averaging = "mean_then_normalize"


# -- pure functions (vectorised, shapes documented) ----------------------------------------------------------
def window_index_sets(grid: tuple[int, int], size: int, stride: int = 1) -> torch.Tensor:
    """Patch indices of every ``size x size`` sliding window over a patch grid.

    Windows are ordered row-major by their top-left corner and each window's patches row-major, the order of
    ``F.unfold`` over the index grid (anomalib ``make_masks``, but batch-first: one row per window).

    Args:
        grid: ``(rows, cols)`` of the patch grid.
        size: window side in patches.
        stride: step between windows in patches.

    Returns:
        ``(M, K)`` LongTensor, M = windows, K = size**2, indices 0-based row-major over the grid.
    """
    rows, cols = grid
    if not 1 <= size <= min(rows, cols) or stride < 1:
        raise ValueError(f"window size {size} / stride {stride} do not fit a {rows}x{cols} patch grid")
    tops = torch.arange(0, rows - size + 1, stride)
    lefts = torch.arange(0, cols - size + 1, stride)
    offsets = torch.arange(size)
    corner = (tops[:, None] * cols + lefts[None, :]).reshape(-1)  # (M,)
    within = (offsets[:, None] * cols + offsets[None, :]).reshape(-1)  # (K,)
    return corner[:, None] + within[None, :]


def coverage_matrix(windows: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Which windows cover which patch: ``(P, M)`` float 0/1 from ``(M, K)`` index sets.

    Raises:
        ValueError: a patch lies in no window (a stride that does not tile the grid); its harmonic mean
            would be empty, which anomalib silently turns into a score of 0.
    """
    coverage = F.one_hot(windows, num_patches).sum(1).T.float()  # (P, M); a window holds each patch once
    if not bool((coverage.sum(1) > 0).all()):
        raise ValueError("some patches are covered by no window; choose a stride that tiles the grid")
    return coverage


def abnormal_probability(embeddings: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Probability of the anomalous state, softmax(cos / T) over [normal, anomalous] (paper eq. 1).

    Args:
        embeddings: ``(..., D)`` image or window embeddings.
        text: ``(2, D)`` normal and anomalous text vectors.
        temperature: softmax temperature.

    Returns:
        ``(...)`` probabilities in (0, 1).
    """
    cosine = F.normalize(embeddings, dim=-1) @ F.normalize(text, dim=-1).T  # (..., 2)
    return (cosine / temperature).softmax(-1)[..., 1]


def harmonic_aggregation(window_scores: torch.Tensor, coverage: torch.Tensor) -> torch.Tensor:
    """Per-patch harmonic mean of the scores of the windows covering it (paper eq. 3).

    Args:
        window_scores: ``(B, M)`` window scores in (0, 1].
        coverage: ``(P, M)`` 0/1 coverage matrix from :func:`coverage_matrix`.

    Returns:
        ``(B, P)`` patch scores: ``n_p / sum_{w covers p} 1/s_w``.
    """
    inverse = window_scores.clamp_min(_MIN_SCORE).reciprocal()  # (B, M)
    return coverage.sum(1) / (inverse @ coverage.T)


def combine_scales(image_scores: torch.Tensor, scale_maps: list[torch.Tensor]) -> torch.Tensor:
    """Multi-scale map: harmonic mean of the image score (broadcast to every patch) and each scale's map.

    Args:
        image_scores: ``(B,)`` image-level scores.
        scale_maps: per window size, ``(B, P)`` patch scores.

    Returns:
        ``(B, P)``.
    """
    image_map = image_scores[:, None].expand_as(scale_maps[0])
    stacked = torch.stack([image_map, *scale_maps]).clamp_min(_MIN_SCORE)  # (1 + scales, B, P)
    return harmonic_mean(stacked, dim=0)


@dataclass(frozen=True)
class WindowPass:
    """An image stage: the embeddings ``(B, M, D)`` of every ``size x size`` window, each run as an image."""

    size: int
    stride: int = 1

    def run(self, backbone: ClipBackbone, pixels: torch.Tensor) -> torch.Tensor:
        """Window embeddings, windows ordered as :func:`window_index_sets`."""
        return backbone.encode_token_subsets(pixels, window_index_sets(backbone.grid, self.size, self.stride))


# -- the method -----------------------------------------------------------------------------------------------
@register_method("winclip", WinClipConfig)
class WinClip(ZeroShotMethod):
    """Zero-shot WinCLIP on the shared backbone.

    Buffers (all non-persistent: they are rebuilt from the backbone grid and the class name, so the
    method's ``state_dict`` is empty):
        ``coverage_<k>``: ``(P, M_k)`` 0/1 coverage of patches by the windows of side k.
        ``text_features``: ``(2, D)`` normal / anomalous ensemble vectors, filled by :meth:`setup`.
    """

    uses_class_name = True

    def __init__(self, backbone: ClipBackbone, config: WinClipConfig) -> None:
        super().__init__(backbone, config)
        if not config.window_sizes or len(set(config.window_sizes)) != len(config.window_sizes):
            raise ValueError(f"winclip needs distinct window sizes, got {config.window_sizes}")
        num_patches = backbone.grid[0] * backbone.grid[1]
        for size in config.window_sizes:
            windows = window_index_sets(backbone.grid, size, config.window_stride)
            self.register_buffer(f"coverage_{size}", coverage_matrix(windows, num_patches), persistent=False)
        self.register_buffer("text_features", torch.empty(0, backbone.embed_dim), persistent=False)

    def _build_class_state(self) -> None:
        """Encode the two prompt ensembles for ``self.class_name`` (paper section 3.2, CPE)."""
        vectors = [
            average_ensemble(
                encode_sentences(self.backbone, build_sentences(states, self.config.templates, self.class_name)),
                self.config.averaging,
            )
            for states in (self.config.normal_states, self.config.anomalous_states)
        ]
        self.text_features = torch.stack(vectors).to(self.text_features.device)

    def image_stages(self) -> tuple[ImageStage, ...]:
        """CLIP's image embedding, then one batched pass of every window per window size (2 by default)."""
        stride = self.config.window_stride
        passes = [TowerPass(need_global=True), *(WindowPass(size, stride) for size in self.config.window_sizes)]
        return tuple(ImageStage(self.backbone, forward) for forward in passes)

    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """Maps and scores from the image and window embeddings.

        Returns:
            :class:`AnomalyResult` with ``(B, S, S)`` maps (multi-scale harmonic map, bilinear,
            ``align_corners=False``, no smoothing) and ``(B,)`` scores (image-level class score).
        """
        text, temperature = self.text_features, self.config.temperature
        image, *windows = self.image_stages()
        image_scores = abnormal_probability(outputs[image].global_embedding, text, temperature)  # (B,)
        scale_maps = []
        for stage in windows:
            window_scores = abnormal_probability(outputs[stage], text, temperature)  # (B, M)
            scale_maps.append(harmonic_aggregation(window_scores, getattr(self, f"coverage_{stage.forward.size}")))
        patch_map = combine_scales(image_scores, scale_maps)  # (B, P)
        grid = patch_map.reshape(-1, 1, *self.backbone.grid)
        maps = upsample(grid, self.image_size, align_corners=False)[:, 0]
        return AnomalyResult(maps.float(), image_scores.float())
