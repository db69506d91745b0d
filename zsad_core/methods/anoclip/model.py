"""AnoCLIP and AnoCLIP+ (Deng et al., arXiv 2308.15939, code ``hq-deng/AnoVL``; docs/methods.md, AnoCLIP).

Training-free (``anoclip``): the ViT runs CLIP's own path beside a value-value ("surgery") path on every
block; the last block's V-V patch tokens, projected into the joint space, are compared with two
domain-aware prompt ensembles (normal / abnormal states). The map is the abnormal softmax probability of
every patch (raw cosines, no temperature), 3x3 mean-filtered on the patch grid and upsampled bilinearly.
The image score is the same probability for CLIP's global embedding, averaged over 22 augmented views.

With test-time adaptation (``anoclip+``): before the map, each image's patch tokens pass through a small
adapter trained for 5 AdamW steps on that image alone (:mod:`.tta`); the image score is unchanged, as in
the script.

Fixed against the AnoVL script (see also :mod:`.tta`, :mod:`.views`):

* the script re-initialises the adapter per image but keeps one AdamW per class, so moments and step
  counts leak from earlier test images into later ones and results depend on the test order; here every
  image starts from a fresh optimiser;
* adapter initialisation and noise come from a seeded generator, not the global RNG, so a prediction does
  not depend on what ran before or on the batch it is in;
* the grayscale view is the luma of the un-normalised image (the script applies the luma weights to the
  CLIP-normalised tensor; ``gray_on_normalized=True`` restores that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from zsad_core.backbone import ClipBackbone, SurgeryConfig
from zsad_core.methods.anoclip.prompts import (
    ABNORMAL_STATES,
    CLASS_ALIASES,
    NORMAL_STATES,
    OBJECT_TEMPLATES,
    TEXTURE_TEMPLATES,
    encode_state_prompts,
)
from zsad_core.methods.anoclip.tta import ADAPTERS, AdapterKind, adapt_tokens
from zsad_core.methods.anoclip.views import official_views
from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.ops import cosine_logits, mean_filter3x3, tokens_to_grid, upsample
from zsad_core.methods.registry import register_method
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass

ImageViews = Literal["none", "official22"]


@dataclass(frozen=True)
class AnoCLIPConfig(MethodConfig):
    """Official training-free AnoCLIP settings (AnoVL ``vl_test.py`` / ``test_zero_shot.sh`` unless noted).

    Attributes:
        backbone: OpenCLIP ViT-B/16+ with LAION-400M epoch-32 weights (``--pretrained laion400m_e32``); the
            OpenAI mean/std the script normalises with come with the weight source.
        image_size: 240 (``--image_size 240``), the backbone's native size: a 15x15 patch grid.
        taps: None means the last block, the only V-V tap the script uses (index 6 of its tap list =
            layer 12); a one-element tuple picks another block.
        normal_states: 7 normal state words (``prompt_ensemble.py``).
        abnormal_states: 7 abnormal state words (``prompt_ensemble.py``).
        object_templates: 66 domain-aware templates for objects (industrial photo + industrial image +
            manufacturing image).
        texture_templates: 66 domain-aware templates for textures (industrial photo + textural photo +
            surface picture); chosen when ``setup(domain="texture")``.
        class_aliases: class names replaced before prompting (``class_mapping``: macaroni1/2 -> macaroni).
        image_views: ``official22`` averages the image score over the script's 22 augmented views (faithful,
            about 22x the image-score cost: one extra backbone pass over 21 views per image); ``none`` scores
            the image alone. Serving should set ``none``.
        gray_on_normalized: reproduce the script's grayscale view, luma weights applied to the normalised
            tensor (False: the luma of the real image, re-normalised).
    """

    backbone: str = "ViT-B-16-plus-240:laion400m_e32"
    image_size: int = 240
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    object_templates: tuple[str, ...] = OBJECT_TEMPLATES
    texture_templates: tuple[str, ...] = TEXTURE_TEMPLATES
    class_aliases: tuple[tuple[str, str], ...] = CLASS_ALIASES
    image_views: ImageViews = "official22"
    gray_on_normalized: bool = False


@dataclass(frozen=True)
class AnoCLIPPlusConfig(AnoCLIPConfig):
    """AnoCLIP+ = AnoCLIP plus per-image test-time adaptation (``--adapter True --epoch 5``, ``model.py``).

    Attributes:
        adapter: ``text_anchored`` (MVTec script, ``TextAdapter``) or ``linear`` (VisA script, ``Adapter``).
        tta_steps: AdamW steps per image (``--epoch 5``).
        tta_lr: AdamW learning rate (``torch.optim.AdamW(..., 1e-3)``).
        tta_weight_decay: AdamW weight decay (not set in the script: PyTorch's default 0.01).
        noise_std: std of the Gaussian noise on the corrupted copy (``0.05 * 1.1 ** 1`` = 0.055).
        seed: seed of the adapter initialisation and of the noise (``--seed 111`` for MVTec, 42 for VisA).
    """

    adapter: AdapterKind = "text_anchored"
    tta_steps: int = 5
    tta_lr: float = 1e-3
    tta_weight_decay: float = 1e-2
    noise_std: float = 0.055
    seed: int = 111


# -- pure functions --------------------------------------------------------------------------------------------
def abnormal_probability(features: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """``softmax_2(x^ . t^)[abnormal]`` of every feature, raw cosines (AnoVL uses no temperature).

    Args:
        features: ``(B, N, D)`` tokens or view embeddings, unnormalised.
        text: ``(2, D)`` (normal, abnormal) state embeddings.

    Returns:
        ``(B, N)`` in (0, 1).
    """
    return cosine_logits(features, text).softmax(-1)[..., 1]


def anomaly_map(tokens: torch.Tensor, text: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """AnoCLIP's pixel map: patch probabilities, 3x3 mean filter (replicate), bilinear ``align_corners=True``.

    Args:
        tokens: ``(B, N, D)`` patch tokens (no CLS), N = rows * cols.
        text: ``(2, D)`` state embeddings.
        grid: ``(rows, cols)`` of the patch grid.
        size: output side S.

    Returns:
        ``(B, S, S)``.
    """
    patch = tokens_to_grid(abnormal_probability(tokens, text).unsqueeze(-1), grid)  # (B, 1, rows, cols)
    return upsample(mean_filter3x3(patch), size, align_corners=True)[:, 0]


def view_score(embeddings: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Image score: the abnormal probability of the global embeddings, averaged over views.

    Args:
        embeddings: ``(B, V, D)`` CLIP image embeddings of V views of each image.
        text: ``(2, D)`` state embeddings.

    Returns:
        ``(B,)``.
    """
    return abnormal_probability(embeddings, text).mean(-1)


@dataclass(frozen=True)
class ViewPass:
    """An image stage: CLIP's global embeddings ``(B, 21, D)`` of the 21 non-identity official views.

    Attributes:
        gray_on_normalized: see :func:`.views.grayscale`.
    """

    gray_on_normalized: bool = False

    def run(self, backbone: ClipBackbone, pixels: torch.Tensor) -> torch.Tensor:
        """All views of the batch through the backbone in one call."""
        source = backbone.source
        views = official_views(pixels, source.mean, source.std, self.gray_on_normalized)[:, 1:]
        batch, count = views.shape[:2]
        embeddings = backbone.encode_image(views.flatten(0, 1), need_global=True).global_embedding
        return embeddings.view(batch, count, -1)


# -- methods ---------------------------------------------------------------------------------------------------
@register_method("anoclip", AnoCLIPConfig)
class AnoCLIP(ZeroShotMethod):
    """Training-free AnoCLIP: V-V patch tokens against domain-aware contrastive state prompts."""

    uses_class_name = True
    # The V-V path on every block, starting from the block input (AnoVL ``for i in range(1, 13)``).
    surgery = SurgeryConfig(start_block=1, init="residual")

    def __init__(self, backbone: ClipBackbone, config: AnoCLIPConfig) -> None:
        super().__init__(backbone, config)
        if config.taps is None:
            self.taps = (backbone.num_layers,)  # the script's only map layer, not the quarter points
        elif len(self.taps) != 1:
            raise ValueError(f"{self.name} maps from one V-V layer, got taps {self.taps}")
        if config.image_views not in ("none", "official22"):
            raise ValueError(f"image_views must be 'none' or 'official22', got {config.image_views!r}")
        self.text: torch.Tensor | None
        self.sentences: torch.Tensor | None
        self.register_buffer("text", None, persistent=False)  # (2, D) normal/abnormal, rebuilt by setup
        self.register_buffer("sentences", None, persistent=False)  # (2P, D) normalised, the adapter's anchors

    def _build_class_state(self) -> None:
        config = self.config
        templates = config.texture_templates if self.domain == "texture" else config.object_templates
        name = dict(config.class_aliases).get(self.class_name, self.class_name)
        self.text, self.sentences = encode_state_prompts(
            self.backbone, name, config.normal_states, config.abnormal_states, templates
        )

    def image_stages(self) -> tuple[ImageStage, ...]:
        """The V-V path to the map tap with CLIP's global embedding, plus the 21 other views when they score.

        The identity view's embedding is the one the map pass computes (the V-V path leaves CLIP's own path and
        its CLS untouched), so only the other views run again.
        """
        tower = ImageStage(self.backbone, TowerPass(self.taps, self.surgery, need_global=True))
        if self.config.image_views == "none":
            return (tower,)
        return tower, ImageStage(self.backbone, ViewPass(self.config.gray_on_normalized))

    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """Maps ``(B, S, S)`` and scores ``(B,)`` from the V-V tokens and the views' global embeddings."""
        if self.text is None:
            raise RuntimeError(f"{self.name}: call setup(class_name) before forward (load_method does this)")
        (tap,) = self.taps
        tower, *views = self.image_stages()
        features = outputs[tower]
        tokens = self._adapt(features.vv_projected[tap][:, 1:])  # (B, N, D), CLS dropped
        maps = anomaly_map(tokens, self.text, features.grid, self.image_size)
        embeddings = features.global_embedding.unsqueeze(1)  # (B, 1, D)
        if views:
            embeddings = torch.cat([embeddings, outputs[views[0]]], dim=1)  # (B, 22, D)
        return AnomalyResult(maps.float(), view_score(embeddings, self.text).float())

    def _adapt(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hook for AnoCLIP+; the training-free method uses the tokens as they are."""
        return tokens


@register_method("anoclip+", AnoCLIPPlusConfig)
class AnoCLIPPlus(AnoCLIP):
    """AnoCLIP with per-image test-time adaptation of the patch tokens before the map."""

    def __init__(self, backbone: ClipBackbone, config: AnoCLIPPlusConfig) -> None:
        super().__init__(backbone, config)
        if config.adapter not in ADAPTERS:
            raise ValueError(f"adapter must be one of {ADAPTERS}, got {config.adapter!r}")
        if config.tta_steps < 0:
            raise ValueError(f"tta_steps must be >= 0, got {config.tta_steps}")

    def _adapt(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens after a fresh adapter was trained on them, one adapter per image (:func:`.tta.adapt_tokens`)."""
        config = self.config
        return adapt_tokens(
            tokens,
            self.text,
            self.sentences,
            adapter=config.adapter,
            steps=config.tta_steps,
            lr=config.tta_lr,
            weight_decay=config.tta_weight_decay,
            noise_std=config.noise_std,
            seed=config.seed,
        )
