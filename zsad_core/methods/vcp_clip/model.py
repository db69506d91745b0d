"""VCP-CLIP (Qu et al., ECCV 2024; docs/methods.md, VCP-CLIP): visual context prompting, trained on an auxiliary set.

Two branches score every patch of tapped ViT layers against image-conditioned "good"/"damaged" text:

* **Pre-VCP**: the image's global embedding becomes the class tokens of the prompts (no product name),
  deep prompts run through the frozen text tower, and per tap a trained ``Linear(W -> D)`` maps the raw
  patch tokens into the joint space: ``P_pre^l = softmax_2(up(e^tau1 * norm(Linear_l(x_l)) . T^T))``.
* **Post-VCP**: the text embeddings attend to the tap's normalised raw tokens F^l and are replaced by the
  result T~^l (W-d); ``P_post^l = softmax_2(up(e^tau2 * F^l . T~^l^T))``.

Maps are upsampled as logits (bilinear, ``align_corners=True``) and then soft-maxed, as the official code does.
Inference fuses ``0.2 * mean_l P_pre[abn] + 0.8 * mean_l P_post[abn]`` and smooths it with a Gaussian (sigma 8).
The image score is the mean of the top-2000-pixel means of the two unsmoothed branch maps.

Official evaluation (``test.py``), not done here: the fused map and the score are min-max normalised over
the whole test set of a class, which needs all test images. A per-image output must not depend on other
images, so ``forward`` returns the raw values; the evaluation module offers that min-max as an
evaluation-only option. The min-max is affine per class, so per-class AUROC, AP, F1-max and the
threshold-grid PRO are the same with or without it. The official score min-maxes the *sum* of the two
top-k means; the mean used here has the same ranking and stays in [0, 1].

State-dict names vs the official checkpoint: ``context.query``/``context.conv`` = ``New_Lan_Embed``
``prompt_query``/``prompt_linear1.fc``; ``tau_pre`` = ``New_Lan_Embed.prompt_temp``; ``text_prompts.*`` =
the CLIP model's ``prompt_embeddings``, ``deep_prompt_embeddings``, ``prompt_proj``, ``prompt_norm``;
``pre_heads.i`` = ``trainable_linearlayer.fc.i``; ``post.{query,key,value,out}`` = ``Zero_try``
``{q_proj_pre,k_proj_pre_1,v_proj_pre_1,proj_post_t}``; ``tau_post`` = ``Zero_try.prompt_temp_l1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from zsad_core.backbone import ClipBackbone, VisionFeatures
from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.heads import TextQueryAttention
from zsad_core.methods.losses import dice_loss, focal_loss
from zsad_core.methods.ops import gaussian_blur, tokens_to_grid, topk_mean, upsample
from zsad_core.methods.registry import register_method
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass
from zsad_core.methods.vcp_clip.prompts import DeepTextPrompts, PromptLayout, VisualContext, encode_prompts


@dataclass(frozen=True)
class VcpClipConfig(MethodConfig):
    """Official VCP-CLIP settings (``train.sh``/``test.sh`` and the code's defaults unless noted).

    Attributes:
        backbone: OpenAI ViT-L/14@336 (``--pretrained_path ViT-L-14-336px.pt``).
        image_size: 518 (``--image_size 518``); position embeddings resized bicubically with antialiasing.
        taps: None = quarter points, 6/12/18/24 on ViT-L (``--features_list 6 12 18 24``); raw residual tokens.
        backbone_activation: ``gelu``: the official ``ResidualAttentionBlock`` uses ``nn.GELU`` in both towers
            although the OpenAI weights were trained with QuickGELU; the released VCP weights were trained so.
        pos_interpolation: ``bicubic`` (official ``resize_pos_embed``, antialiased).
        normal_template: the one normal prompt (``prompt_ensemble.py``); ``{}`` is the class placeholder.
        abnormal_template: the one abnormal prompt (``prompt_ensemble.py``).
        placeholder: a one-token word standing where the official code has its added ``<|class|>`` token;
            its embedding is replaced, so which word it is does not matter.
        prompt_len: r, class tokens made from the global embedding (``--prompt_len 2``).
        use_global: condition the class tokens on the image (``--use_global``, on by default).
        deep_prompt_len: n, learnable text tokens per text layer (``--deep_prompt_len 1``); the layers are
            all text layers (layer 0 plus ``--total_d_layer_len 11`` = text layers - 1).
        prompt_dropout: dropout on the projected text prompts (``nn.Dropout(0.1)``), training only.
        post_heads: heads of the Post-VCP attention (``Zero_Parameter(num_heads=8)``); must divide the width.
        temperature: initial temperature of both branches (``log(1/0.07)`` init of ``prompt_temp`` and
            ``prompt_temp_l1``); both are learned.
        alpha: weight of the Pre-VCP map in the fused map (``calcuate_metric(alpha=0.2)``).
        sigma: Gaussian smoothing of the fused map in pixels (``gaussian_filter(sigma=8)``).
        topk: pixels averaged per branch for the image score (``can_k = -2000``); chosen for 518 x 518 maps
            (0.75 % of 268,324 pixels), clipped to the pixel count on smaller inputs.
        lr: Adam learning rate of all weights but the temperatures: 4e-5 when training on VisA (the default,
            whose weights are tested on MVTec-AD), 2e-5 when training on MVTec-AD (``train.sh``).
        temperature_lr: learning rate of the two temperatures (0.01, their own param group in ``train.py``).
        betas: Adam betas (``train.py``).
        epochs: training epochs (``--epoch 10``; the released weights are epoch 10).
        batch_size: training batch size (``--batch_size 32``).
        seed: training seed (``--seed 333``).
    """

    backbone: str = "ViT-L-14-336:openai"
    image_size: int = 518
    taps: tuple[int, ...] | None = None
    backbone_activation: str = "gelu"
    pos_interpolation: str = "bicubic"
    normal_template: str = "a photo of a good {}"
    abnormal_template: str = "a photo of a damaged {}"
    placeholder: str = "X"
    prompt_len: int = 2
    use_global: bool = True
    deep_prompt_len: int = 1
    prompt_dropout: float = 0.1
    post_heads: int = 8
    temperature: float = 0.07
    alpha: float = 0.2
    sigma: float = 8.0
    topk: int = 2000
    lr: float = 4e-5
    temperature_lr: float = 0.01
    betas: tuple[float, float] = (0.5, 0.999)
    epochs: int = 10
    batch_size: int = 32
    seed: int = 333


@register_method("vcp-clip", VcpClipConfig)
class VcpClip(ZeroShotMethod):
    """VCP-CLIP: class-agnostic, learnable; a loaded instance starts in eval mode, ready to predict.

    Call ``.train()`` before training (prompt dropout); :meth:`predict` always runs in eval mode.
    """

    learnable = True
    config: VcpClipConfig

    def __init__(self, backbone: ClipBackbone, config: VcpClipConfig) -> None:
        super().__init__(backbone, config)
        width, embed_dim, text_width = backbone.width, backbone.embed_dim, backbone.text_width
        self.context = VisualContext(embed_dim, text_width, config.prompt_len, config.use_global)
        text_layers = len(backbone.model.transformer.resblocks)  # the backbone exposes no text-depth property
        self.text_prompts = DeepTextPrompts(text_width, config.deep_prompt_len, text_layers - 1, config.prompt_dropout)
        templates = (config.normal_template, config.abnormal_template)
        self.layout = PromptLayout(
            backbone, [t.format(config.placeholder) for t in templates], config.placeholder, config.prompt_len
        )
        context_length = self.layout.embeddings.shape[1]
        if int(self.layout.eot.max()) + config.deep_prompt_len >= context_length:
            raise ValueError(f"the prompts do not fit {context_length} tokens with {config.deep_prompt_len} prompts")
        self.pre_heads = nn.ModuleList(nn.Linear(width, embed_dim) for _ in self.taps)
        self.post = TextQueryAttention(embed_dim, width, config.post_heads)
        initial = math.log(1.0 / config.temperature)
        self.tau_pre = nn.Parameter(torch.tensor(initial))  # log of the Pre-VCP logit scale
        self.tau_post = nn.Parameter(torch.tensor(initial))  # log of the Post-VCP logit scale
        self.eval()  # loaders hand out inference-ready modules; training loops call .train()

    # -- the two branches ------------------------------------------------------------------------------------
    def encode_text(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """Pre-VCP text embeddings ``(B, 2, D)`` (normal, abnormal) of ``(B, D)`` global embeddings."""
        return encode_prompts(self.backbone, self.layout, self.text_prompts, self.context(global_embedding))

    def image_stages(self) -> tuple[ImageStage, ...]:
        """CLIP's own path with the raw taps and the global embedding (Pre-VCP's text reads it: in the head)."""
        return (ImageStage(self.backbone, TowerPass(self.taps, need_global=True)),)

    def branch_probabilities(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tap class probabilities of both branches of ``(B, 3, S, S)`` normalised images.

        Returns:
            Pre-VCP and Post-VCP probabilities, each ``(T, B, 2, S, S)`` (T taps; channel 1 = abnormal).
        """
        (stage,) = self.image_stages()
        with torch.no_grad():  # CLIP is frozen; only the text path needs gradients
            features = stage.run(pixels)
        return self._branch_probabilities(features)

    def _branch_probabilities(self, features: VisionFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`branch_probabilities` from the image stage's output."""
        patches = torch.stack([features.raw[tap][:, 1:] for tap in self.taps])  # (T, B, N, W), CLS dropped
        taps, batch = patches.shape[:2]
        text = self.encode_text(features.global_embedding)  # (B, 2, D)

        mapped = torch.stack([head(tokens) for head, tokens in zip(self.pre_heads, patches, strict=True)])
        pre = self.tau_pre.exp() * F.normalize(mapped, dim=-1) @ text.transpose(1, 2)  # (T, B, N, 2)

        dense = F.normalize(patches, dim=-1).flatten(0, 1)  # (T*B, N, W); one shared module for all taps
        refined = self.post(text.repeat(taps, 1, 1), dense)  # (T*B, 2, W), replaces the text
        post = self.tau_post.exp() * dense @ refined.transpose(1, 2)  # (T*B, N, 2)

        shape = (taps, batch, 2, self.image_size, self.image_size)
        pre = self._probabilities(pre.flatten(0, 1), features.grid).view(shape)
        post = self._probabilities(post, features.grid).view(shape)
        return pre, post

    def _probabilities(self, logits: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """``(M, N, 2)`` patch logits -> ``(M, 2, S, S)`` probabilities: upsample logits, then softmax."""
        return upsample(tokens_to_grid(logits, grid), self.image_size, align_corners=True).softmax(dim=1)

    # -- inference -------------------------------------------------------------------------------------------
    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """Anomaly maps ``(B, S, S)`` and scores ``(B,)`` in [0, 1] from the tapped tokens."""
        (stage,) = self.image_stages()
        pre, post = self._branch_probabilities(outputs[stage])
        pre_map, post_map = pre[:, :, 1].mean(0), post[:, :, 1].mean(0)  # (B, S, S)
        alpha = self.config.alpha
        maps = gaussian_blur(alpha * pre_map + (1.0 - alpha) * post_map, self.config.sigma)
        k = self.config.topk
        scores = 0.5 * (topk_mean(pre_map.flatten(1), k) + topk_mean(post_map.flatten(1), k))
        return AnomalyResult(maps.float(), scores.float())

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``sum_l [Focal + Dice_abn](P_pre^l) + sum_l [Focal + Dice_abn](P_post^l)`` against the masks.

        Both loss terms average over images and pixels; stacking the taps along the batch and multiplying by
        the tap count gives exactly the official sum over taps.
        """
        pre, post = self.branch_probabilities(batch["pixels"])
        gt = (batch["masks"].to(pre.device) > 0.5).float()  # official: mask > 0.5 -> 1, else 0
        taps = pre.shape[0]
        gt = gt.repeat(taps, 1, 1)  # (T*B, S, S), tap-major like the flattened probabilities
        total = pre.new_zeros(())
        for probs in (pre.flatten(0, 1), post.flatten(0, 1)):
            total = total + taps * (focal_loss(probs, gt.long()) + dice_loss(probs[:, 1], gt))
        return total

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam, betas (0.5, 0.999): every weight at ``lr``, the two temperatures at ``temperature_lr``."""
        temperatures = [self.tau_pre, self.tau_post]
        others = [p for p in self.trainable_parameters() if all(p is not t for t in temperatures)]
        groups = [{"params": others, "lr": self.config.lr}, {"params": temperatures, "lr": self.config.temperature_lr}]
        return torch.optim.Adam(groups, lr=self.config.lr, betas=self.config.betas)
