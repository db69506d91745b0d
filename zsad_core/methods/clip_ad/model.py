"""CLIP-AD SDP (training-free) and SDP+ (fine-tuned linear layers) on the shared backbone (docs/methods.md, CLIP-AD).

SDP runs CLIP with a *staged* value-value path beside the original one: the path restarts every L/4
blocks, so each quarter tap (3/6/9/12 on ViT-B/16+) holds only the V-V outputs of its own stage. Each tap's
projected, L2-normalised tokens go through feature surgery against the two RVS text vectors; the abnormal
similarities are summed over taps, upsampled and Gaussian-smoothed. SDP+ adds four linear layers that map the
original path's raw tokens into the joint space, trained with focal + dice loss on an auxiliary dataset.

Fixes relative to the official code (``ByChelsea/CLIP-AD`` @f004973):

* **Original-path taps.** The official block updates ``x_ori += attention_residual`` in place, which also
  changes the tensor already stored as the previous block's tap; taps 3, 6 and 9 therefore hold
  ``X_l + Attn_{l+1}`` (tap 12 is clean). The backbone here clones every tap, so SDP+ reads clean features.
  The released ``train_on_visa.pth`` / ``train_on_mvtec.pth`` linear layers were trained *and* evaluated on
  the contaminated ones, so ``official_tap_overwrite=True`` reproduces them (loading official weights turns
  it on, see :mod:`zsad_core.official_weights`).
* **CLS of the V-V taps.** The official copies the original CLS into each V-V tap (``x[0] = x_ori[0]``)
  only after the whole forward, so SDP's CLS rows at taps 3, 6, 9 carry the same contamination; they set the
  feature-surgery class weights w_c there. The image score (tap 12) is unaffected. Here CLS is the clean
  original CLS of the same layer.
* Representative vectors stay float32 (the official rounds four of the five selectors to float16), and DBSCAN
  without a cluster falls back to the mean instead of crashing (see :mod:`.rvs`).

Image score: the paper fuses ``softmax(100 · F_cls · T)[abn]`` and ``max(map)`` after min-max normalising
*each over the whole test set of a class* (``util/metrics.py``), which no single image can do. ``forward``
returns their plain sum, computable per image; :meth:`ClipAD.score_terms` returns both raw terms so an
evaluation can reproduce the paper's per-class fusion (min-max each over the class, then add).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from zsad_core.backbone import ClipBackbone, SurgeryConfig, VisionFeatures
from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.clip_ad.rvs import (
    ABNORMAL_STATES,
    NORMAL_STATES,
    RVS_METHODS,
    TEMPLATES,
    RepVec,
    encode_state_texts,
)
from zsad_core.methods.clip_ad.surgery import ABNORMAL, linear_probe_probs, surgery_map
from zsad_core.methods.losses import dice_loss, focal_loss
from zsad_core.methods.ops import gaussian_blur
from zsad_core.methods.registry import register_method
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass


@dataclass(frozen=True)
class ClipADConfig(MethodConfig):
    """Official SDP settings (``test_SDP.sh``; the argparse defaults of ``test.py`` differ and are not used).

    Attributes:
        backbone: OpenCLIP ViT-B/16+ with LAION-400M epoch-31 weights (``--model ViT-B-16-plus-240
            --pretrained laion400m_e31``).
        image_size: 240, the backbone's own size (``--image_size 240``); maps come back at this size.
        taps: None = quarter points, 3/6/9/12 on ViT-B (``--features_list 3 6 9 12``).
        rep_vec: representative-vector selector, one of ``mean``, ``pca``, ``kde``, ``dbscan``, ``mean_shift``
            (``--rep_vec dbscan`` in every script).
        dbscan_eps: DBSCAN radius; 0.5 for MVTec-AD and the medical sets, the official uses 1.5 when the
            dataset is VisA (``prompt_ensemble.py``).
        dbscan_min_samples: DBSCAN core count; 15, and 25 when the dataset is VisA.
        kde_bandwidth: Gaussian KDE bandwidth of ``rep_vec="kde"`` (official 0.3).
        mean_shift_bandwidth: bandwidth of ``rep_vec="mean_shift"`` (official 2).
        surgery_reset_every: blocks per stage of the V-V path; None = num_layers // 4, the official
            ``count % (L / 4) == 0`` reset (3 on ViT-B).
        logit_scale: multiplier of the cosines in the image-score softmax, and in SDP+ of the fine-tuned
            maps (official 100.0).
        sigma: Gaussian smoothing of the map in pixels, scipy ``gaussian_filter`` (``--smoothing`` default 8).
        normal_states: normal state words, ``{}`` = class name (official 9; the medical sets use others).
        abnormal_states: abnormal state words (official 10).
        templates: sentence templates (official 22).
        official_tap_overwrite: reproduce the official in-place overwrite of taps 3/6/9 (each holds
            ``X_l + Attn_{l+1}``, also as the CLS of the V-V taps); the released SDP+ layers need it.
    """

    backbone: str = "ViT-B-16-plus-240:laion400m_e31"
    image_size: int = 240
    taps: tuple[int, ...] | None = None
    rep_vec: RepVec = "dbscan"
    dbscan_eps: float = 0.5
    dbscan_min_samples: int = 15
    kde_bandwidth: float = 0.3
    mean_shift_bandwidth: float = 2.0
    surgery_reset_every: int | None = None
    logit_scale: float = 100.0
    sigma: float = 8.0
    normal_states: tuple[str, ...] = NORMAL_STATES
    abnormal_states: tuple[str, ...] = ABNORMAL_STATES
    templates: tuple[str, ...] = TEMPLATES
    official_tap_overwrite: bool = False
    feature_flags: ClassVar[tuple[str, ...]] = (*MethodConfig.feature_flags, "official_tap_overwrite")

    def __post_init__(self) -> None:
        if self.rep_vec not in RVS_METHODS:
            raise ValueError(f"rep_vec must be one of {RVS_METHODS}, got {self.rep_vec!r}")
        if self.sigma < 0 or (self.surgery_reset_every is not None and self.surgery_reset_every < 1):
            raise ValueError("sigma must be >= 0 and surgery_reset_every >= 1")

    def rvs_options(self) -> dict[str, float]:
        """Keyword options of :func:`representative_vector` for this config."""
        return {
            "kde_bandwidth": self.kde_bandwidth,
            "dbscan_eps": self.dbscan_eps,
            "dbscan_min_samples": self.dbscan_min_samples,
            "mean_shift_bandwidth": self.mean_shift_bandwidth,
        }


@dataclass(frozen=True)
class ClipADPlusConfig(ClipADConfig):
    """Official SDP+ settings (``train_SDP_plus.sh`` / ``test_SDP_plus.sh``, ``train.py``).

    Attributes:
        sigma: Gaussian smoothing at test time; 8 when testing on MVTec-AD (trained on VisA), the official
            uses 2 when testing on VisA (``--smoothing 2``, trained on MVTec-AD).
        train_class_name: class name of the RVS text the layers are trained against. Deviation: the official
            uses each training image's own class name, which the framework's batches do not carry; the
            default is the class-agnostic "object".
        epochs: passes over the auxiliary set (``--epochs 5``).
        batch_size: images per step (``--batch_size 8``).
        seed: ``setup_seed(42)`` in ``train.py``; also seeds the linear layers' (PyTorch default) init here.
        lr: Adam learning rate, default betas (``--learning_rate 0.0001``).
    """

    sigma: float = 8.0
    train_class_name: str = "object"
    epochs: int = 5
    batch_size: int = 8
    seed: int = 42
    lr: float = 1e-4


@register_method("clip-ad", ClipADConfig)
class ClipAD(ZeroShotMethod):
    """CLIP-AD SDP: staged dual path + feature surgery, training-free.

    Buffers (non-persistent; rebuilt by :meth:`setup`, so SDP's ``state_dict`` is empty):
        ``text_features``: ``(2, D)`` unit RVS vectors [normal, abnormal] of the set-up class.

    Output: maps ``(B, S, S)`` in ``[-n, n]`` (n = number of taps; real maps are near 0, cosine differences),
    scores ``softmax(logit_scale · F_cls · T)[abn] + max(map)`` in ``[-n, n + 1]``.
    """

    uses_class_name = True
    config: ClipADConfig

    def __init__(self, backbone: ClipBackbone, config: ClipADConfig) -> None:
        super().__init__(backbone, config)
        reset = config.surgery_reset_every or max(1, backbone.num_layers // 4)
        self.surgery = SurgeryConfig(start_block=1, init="zero", reset_every=reset, cls_from_original=True)
        self.register_buffer("text_features", torch.zeros(2, backbone.embed_dim), persistent=False)

    # -- class set-up ----------------------------------------------------------------------------------------
    def _encode_class(self, class_name: str) -> torch.Tensor:
        """``(2, D)`` RVS text vectors [normal, abnormal] of ``class_name``."""
        states = (self.config.normal_states, self.config.abnormal_states)
        return encode_state_texts(
            self.backbone, class_name, states, self.config.templates, self.config.rep_vec, **self.config.rvs_options()
        )

    def _build_class_state(self) -> None:
        self.text_features = self._encode_class(self.class_name)

    # -- inference -------------------------------------------------------------------------------------------
    def image_stages(self) -> tuple[ImageStage, ...]:
        """One forward with the staged V-V path; it stops after the last tap (no global embedding needed)."""
        overwritten = self.config.official_tap_overwrite
        tower = TowerPass(self.taps, self.surgery, need_global=False, overwritten_taps=overwritten)
        return (ImageStage(self.backbone, tower),)

    def _raw_map(self, features: VisionFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Unsmoothed map ``(B, S, S)`` and the CLS abnormal probability ``(B,)`` of the last V-V tap."""
        taps = [F.normalize(features.vv_projected[tap], dim=-1) for tap in self.taps]
        raw = surgery_map(taps, self.text_features, features.grid, self.image_size)
        cls_logits = self.config.logit_scale * taps[-1][:, 0] @ self.text_features.T  # (B, 2)
        return raw, cls_logits.softmax(-1)[:, ABNORMAL]

    def _maps_and_terms(self, features: VisionFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        """Smoothed maps ``(B, S, S)`` and the raw image-score terms ``(B, 2)`` [CLS probability, map max]."""
        raw, cls_prob = self._raw_map(features)
        maps = gaussian_blur(raw, self.config.sigma)
        return maps, torch.stack([cls_prob, maps.flatten(1).amax(1)], dim=1)

    def head(self, outputs: StageOutputs) -> AnomalyResult:
        """Maps and per-image scores from the V-V taps.

        The score is the sum of the two raw terms. The paper's score additionally min-max normalises each
        term over the test set of a class before adding them (evaluation only; use :meth:`score_terms`).
        """
        (stage,) = self.image_stages()
        maps, terms = self._maps_and_terms(outputs[stage])
        return AnomalyResult(maps, terms.sum(1))

    def score_terms(self, pixels: torch.Tensor) -> torch.Tensor:
        """The two raw image-score terms ``(B, 2)``: CLS abnormal probability and max of the smoothed map.

        For evaluation pipelines that reproduce the paper's fusion ``minmax_class(term0) + minmax_class(term1)``.
        """
        self._require_setup()
        (stage,) = self.image_stages()
        with torch.inference_mode():
            return self._maps_and_terms(stage.run(pixels.to(self.backbone.device)))[1]


@register_method("clip-ad+", ClipADPlusConfig)
class ClipADPlus(ClipAD):
    """CLIP-AD SDP+: SDP plus per-tap ``Linear(width → embed_dim)`` on the original path's raw tokens.

    Weights: ``linear_layers.{i}.{weight,bias}``, one layer per tap. Buffers (non-persistent):
    ``text_features`` as in SDP, and ``train_text_features`` ``(2, D)`` for ``train_class_name``.

    Test map: ``Σ_l softmax(...)[abn] + M_SDP`` (summed without rescaling, as the official), then the
    Gaussian. Output: maps in ``[-n, 2n]``, scores (same formula as SDP) in ``[-n, 2n + 1]``.
    """

    learnable = True
    config: ClipADPlusConfig

    def __init__(self, backbone: ClipBackbone, config: ClipADPlusConfig) -> None:
        super().__init__(backbone, config)
        # PyTorch's default Linear init, as the official; drawn from a forked RNG seeded with config.seed so a
        # freshly built method is reproducible without disturbing the caller's random state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            layers = [nn.Linear(backbone.width, backbone.embed_dim) for _ in self.taps]
        self.linear_layers = nn.ModuleList(layers)
        self.register_buffer("train_text_features", torch.zeros(2, backbone.embed_dim), persistent=False)

    def _build_class_state(self) -> None:
        super()._build_class_state()
        same = self.config.train_class_name == self.class_name
        self.train_text_features = self.text_features if same else self._encode_class(self.config.train_class_name)

    def _fine_tuned_probs(self, features: VisionFeatures, text: torch.Tensor) -> list[torch.Tensor]:
        """Per tap ``(B, 2, S, S)`` probabilities of the linear probe on the raw original-path tokens."""
        size, scale = self.image_size, self.config.logit_scale
        return [
            linear_probe_probs(layer(features.raw[tap][:, 1:]), text, features.grid, size, scale)
            for layer, tap in zip(self.linear_layers, self.taps, strict=True)
        ]

    def _raw_map(self, features: VisionFeatures) -> tuple[torch.Tensor, torch.Tensor]:
        raw, cls_prob = super()._raw_map(features)
        fine_tuned = sum(probs[:, ABNORMAL] for probs in self._fine_tuned_probs(features, self.text_features))
        return raw + fine_tuned, cls_prob

    # -- training --------------------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ over taps of focal + dice(abnormal) loss, against the ``train_class_name`` text.

        Args:
            batch: ``{"pixels": (B, 3, S, S), "masks": (B, S, S) 0/1, "labels": (B,)}``; labels are unused
                (the official trains on masks only). Masks are binarised at 0.5 as the official does.

        Returns:
            Scalar loss; gradients reach only ``linear_layers``.
        """
        self._require_setup()
        device = self.backbone.device
        with torch.no_grad():  # CLIP is frozen; only the original path is needed, so no V-V path here
            features = self.backbone.encode_image(
                batch["pixels"].to(device), self.taps, need_global=False,
                overwritten_taps=self.config.official_tap_overwrite,
            )
        target = (batch["masks"].to(device) > 0.5).long()
        loss = torch.zeros((), device=device)
        for probs in self._fine_tuned_probs(features, self.train_text_features):
            loss = loss + focal_loss(probs, target) + dice_loss(probs[:, ABNORMAL], target)
        return loss

    def configure_optimizer(self) -> torch.optim.Optimizer:
        """Adam with default betas on the linear layers, lr ``config.lr`` (official 1e-4)."""
        return torch.optim.Adam(self.linear_layers.parameters(), lr=self.config.lr)
