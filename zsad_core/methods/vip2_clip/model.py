"""ViP²-CLIP (Yang et al., arXiv 2505.17692; official code ``kim0806/ViP2-CLIP``; docs/methods.md, ViP2-CLIP).

Per image: ViP-ICA writes a normal and an abnormal prompt conditioned on the global embedding (no class
name), the frozen text encoder turns them into G_t (one call for the whole batch), and at each tap ViP-FGP
replaces G_t by vectors that attended over that tap's patch tokens. UTPA then compares patches with those
vectors: the softmax probabilities give the map, the raw similarities of the top-K patches the image score.

Differences from the official code:

* The normal prompt holds "good". The official code embeds the abnormal tokens for both prompts, so both say
  "damaged"; ``official_state_word_quirk=True`` reproduces that, which released checkpoints need.
* The map averages the layers at patch resolution and upsamples once. Bilinear upsampling is linear and acts
  per channel, so this equals the official order (upsample each layer, then average) up to float rounding.
* The official FGP carries an unused temperature parameter (``prompt_temp_l1``); it is left out.

Kept as the official does it (by default): the global embedding g that conditions ICA is the final CLS
token times ``proj`` *without* ``ln_post`` (``VIP2CLIP_lib/VIP2CLIP.py``; only the patch tokens are
normalised); ``global_ln_post=True`` gives CLIP's usual embedding instead, which released weights never saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from zsad_core.backbone import ClipBackbone, VisionFeatures
from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.heads import TextQueryAttention
from zsad_core.methods.losses import dice_loss, focal_loss, image_ce
from zsad_core.methods.ops import gaussian_blur, tokens_to_grid, upsample
from zsad_core.methods.registry import register_method
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass
from zsad_core.methods.vip2_clip.prompts import StatePrompts


@dataclass(frozen=True)
class Vip2ClipConfig(MethodConfig):
    """Official ViP²-CLIP settings (``train.sh`` / ``test.sh`` unless noted).

    Attributes:
        backbone: OpenAI ViT-L/14@336 (``VIP2CLIP_lib.load("ViT-L/14@336px")``); joint dim = text width = 768.
        image_size: 518 (``--image_size 518``); position embeddings interpolated from 24x24 to 37x37.
        pos_interpolation: bilinear, as the official forward pass resizes the position embedding.
        n_ctx: learnable context vectors per state prompt (scripts: ``--n_ctx 7``; the argparse default is 9).
        n_cls: image-conditioned class tokens (``--n_cls 3``).
        fgp_heads: attention heads of FGP (``FGP(num_heads=8)``); must divide the joint dimension.
        temperature: softmax temperature of the patch and image similarities (0.07 in train.py / test.py).
        topk: patches per tap whose similarities make the image score (``--topk 50``); clipped to the grid.
        sigma: Gaussian smoothing of the map in pixels (``--sigma 8``).
        official_state_word_quirk: False gives the normal prompt its "good"; True reproduces the official ICA,
            whose normal prompt also holds "damaged". Released checkpoints were trained with the quirk.
        global_ln_post: False (official) conditions ICA on the final CLS times ``proj`` without ``ln_post``;
            True on CLIP's usual image embedding (``ln_post`` first). Released checkpoints need False.
        epochs: training epochs (``--epoch 10``; test.sh evaluates the epoch-10 checkpoint).
        batch_size: training batch size (``--batch_size 8``).
        seed: global seed of a training run (``--seed 111``).
        lr: Adam learning rate of ICA: context vectors, class tokens and the class prompter (``--learning_rate``).
        fgp_lr: Adam learning rate of FGP (``learning_rate * 0.01`` in train.py).
    """

    backbone: str = "ViT-L-14-336:openai"
    image_size: int = 518
    pos_interpolation: str = "bilinear"
    n_ctx: int = 7
    n_cls: int = 3
    fgp_heads: int = 8
    temperature: float = 0.07
    topk: int = 50
    sigma: float = 8.0
    official_state_word_quirk: bool = False
    global_ln_post: bool = False
    feature_flags: ClassVar[tuple[str, ...]] = (
        *MethodConfig.feature_flags, "official_state_word_quirk", "global_ln_post",
    )  # fmt: skip
    epochs: int = 10
    batch_size: int = 8
    seed: int = 111
    lr: float = 1e-3
    fgp_lr: float = 1e-5


# -- UTPA: pure functions on per-tap similarities ------------------------------------------------------------
def anomaly_map(probs: torch.Tensor, grid: tuple[int, int], size: int, sigma: float) -> torch.Tensor:
    """Pixel map: per tap (P_abn + 1 - P_norm) / 2, mean over taps, bilinear upsampling, Gaussian blur.

    Args:
        probs: ``(L, B, N, 2)`` [normal, abnormal] probabilities of every patch at every tap.
        grid: patch grid ``(rows, cols)``, rows * cols = N.
        size: output side S.
        sigma: Gaussian sigma in pixels (0 disables it).

    Returns:
        ``(B, S, S)`` maps.
    """
    patch_map = ((probs[..., 1] + 1.0 - probs[..., 0]) / 2.0).mean(0)  # (B, N)
    pixel_map = upsample(tokens_to_grid(patch_map[..., None], grid), size, align_corners=False)[:, 0]
    return gaussian_blur(pixel_map, sigma)


def image_logits(similarities: torch.Tensor, probs: torch.Tensor, topk: int) -> torch.Tensor:
    """Mean raw similarity of the top-K patches of every tap, ranked by abnormal probability.

    Args:
        similarities: ``(L, B, N, 2)`` cosine similarities of patches with the refined text vectors.
        probs: ``(L, B, N, 2)`` their tempered softmax.
        topk: K, clipped to N.

    Returns:
        ``(B, 2)`` mean similarities s over the L*K selected rows; softmax(s / T)[:, 1] is the score.
    """
    k = min(topk, probs.shape[2])
    index = probs[..., 1].topk(k, dim=-1).indices  # (L, B, K)
    chosen = similarities.gather(2, index[..., None].expand(-1, -1, -1, 2))  # (L, B, K, 2)
    return chosen.mean(dim=(0, 2))


@register_method("vip2-clip", Vip2ClipConfig)
class Vip2Clip(ZeroShotMethod):
    """ViP²-CLIP: ICA prompts, FGP refinement and UTPA scoring around a frozen CLIP.

    Attributes:
        prompts: ViP-ICA (:class:`StatePrompts`), trained with ``lr``.
        fgp: ViP-FGP (:class:`~zsad_core.methods.heads.TextQueryAttention` in the joint space), one module
            shared by every tap, trained with ``fgp_lr``.
    """

    learnable = True
    config: Vip2ClipConfig

    def __init__(self, backbone: ClipBackbone, config: Vip2ClipConfig) -> None:
        super().__init__(backbone, config)
        if config.topk < 1 or config.temperature <= 0:
            raise ValueError(f"vip2-clip needs topk >= 1 and temperature > 0, got {config.topk}, {config.temperature}")
        self.prompts = StatePrompts(backbone, config.n_ctx, config.n_cls, config.official_state_word_quirk)
        self.fgp = TextQueryAttention(backbone.embed_dim, backbone.embed_dim, config.fgp_heads)

    # -- pieces -------------------------------------------------------------------------------------------------
    def encode_prompts(self, image: torch.Tensor) -> torch.Tensor:
        """G_t of every image; all 2B prompts go through the text encoder in one call.

        Args:
            image: ``(B, D)`` L2-normalised global image embeddings g.

        Returns:
            ``(B, 2, D)`` L2-normalised [normal, abnormal] text vectors.
        """
        embeddings, eot = self.prompts(image)
        text = self.backbone.encode_embeddings(embeddings, eot)  # (2B, D)
        return F.normalize(text.unflatten(0, (-1, 2)), dim=-1)

    def image_stages(self) -> tuple[ImageStage, ...]:
        """CLIP's own path with the taps and both global embeddings (ICA's class tokens read one: in the head)."""
        return (ImageStage(self.backbone, TowerPass(self.taps, need_global=True)),)

    def similarities(self, pixels: torch.Tensor) -> torch.Tensor:
        """S^l of every tap: patches against the text vectors FGP refined on that tap.

        Args:
            pixels: ``(B, 3, S, S)`` normalised images.

        Returns:
            ``(L, B, N, 2)`` cosine similarities with [normal, abnormal], L taps, N patches (CLS excluded).
        """
        (stage,) = self.image_stages()
        with torch.no_grad():  # CLIP is frozen; keeping its activations out of the graph saves most memory
            features = stage.run(pixels)
        return self._similarities(features)

    def _similarities(self, features: VisionFeatures) -> torch.Tensor:
        """:meth:`similarities` from the image stage's output."""
        patches = F.normalize(torch.stack([features.projected[t][:, 1:] for t in self.taps]), dim=-1)  # (L, B, N, D)
        image = features.global_embedding if self.config.global_ln_post else features.global_embedding_no_ln
        text = self.encode_prompts(F.normalize(image, dim=-1))  # (B, 2, D)
        refined = self.fgp(text.expand(len(self.taps), -1, -1, -1), patches)  # (L, B, 2, D)
        return patches @ refined.transpose(-1, -2)

    # -- inference ----------------------------------------------------------------------------------------------
    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """UTPA map and image score of each image (nothing is shared between the images of a batch).

        Returns:
            ``AnomalyResult`` with ``(B, S, S)`` float32 maps and ``(B,)`` float32 scores in [0, 1].
        """
        (stage,) = self.image_stages()
        similarities = self._similarities(outputs[stage])
        probs = (similarities / self.config.temperature).softmax(dim=-1)
        maps = anomaly_map(probs, self.backbone.grid, self.image_size, self.config.sigma)
        logits = image_logits(similarities, probs, self.config.topk) / self.config.temperature
        return AnomalyResult(maps.float(), logits.softmax(dim=-1)[:, 1].float())

    # -- training -----------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_taps [focal + dice(P_abn, gt) + dice(P_norm, 1 - gt)] on upsampled maps + CE(s / T, label).

        Args:
            batch: ``{"pixels": (B, 3, S, S), "masks": (B, S, S) 0/1, "labels": (B,)}``.

        Returns:
            The scalar loss (no weighting between the terms, as in the official train.py).
        """
        device = self.backbone.device
        gt = (batch["masks"].to(device) > 0.5).float()  # official binarises the resized mask at 0.5
        similarities = self.similarities(batch["pixels"].to(device))
        probs = (similarities / self.config.temperature).softmax(dim=-1)
        layers = probs.shape[0]
        grids = tokens_to_grid(probs.flatten(0, 1), self.backbone.grid)  # (L*B, 2, h, w)
        maps = upsample(grids, self.image_size, align_corners=False).unflatten(0, (layers, -1))  # (L, B, 2, S, S)
        segmentation = sum(
            focal_loss(tap, gt.long()) + dice_loss(tap[:, 1], gt) + dice_loss(tap[:, 0], 1.0 - gt) for tap in maps
        )
        logits = image_logits(similarities, probs, self.config.topk) / self.config.temperature
        return segmentation + image_ce(logits, batch["labels"].to(device))

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam (default betas) with ``lr`` for ICA and ``fgp_lr`` for FGP, as in the official train.py."""
        return torch.optim.Adam(
            [
                {"params": list(self.prompts.parameters()), "lr": self.config.lr},
                {"params": list(self.fgp.parameters()), "lr": self.config.fgp_lr},
            ]
        )


# -- official checkpoints -------------------------------------------------------------------------------------
def convert_official_checkpoint(checkpoint: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Map an official ``epoch_*.pth`` dict (``prompt_learner`` + ``Zero_try``) to this module's state dict.

    The official template buffers and FGP's unused temperature are dropped, fp16 becomes fp32 and the 1x1
    Conv1d weights ``(D, D, 1)`` become Linear weights ``(D, D)`` (see :mod:`zsad_core.official_weights`,
    which also sets the flags the weights need: ``load_method("vip2-clip", weights="official:FILE")``).
    """
    from zsad_core.official_weights import convert_official, flatten

    return convert_official(flatten(checkpoint), "vip2-clip").state
