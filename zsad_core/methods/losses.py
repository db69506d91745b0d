"""Training losses shared by the learnable methods (docs/methods.md, shared pieces)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(probs: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """Focal loss on class probabilities, as the papers' shared implementation computes it.

    Args:
        probs: ``(B, C, H, W)`` probabilities (softmax already applied).
        target: ``(B, H, W)`` integer class per pixel (0 normal, 1 anomalous).
        gamma: focusing parameter.
        smooth: the one-hot target is clamped to [smooth, 1 - smooth] and ``smooth`` is added to p_t.

    Returns:
        Scalar mean over pixels of ``-(1 - p_t)^gamma * log(p_t)``.
    """
    one_hot = F.one_hot(target.long(), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    one_hot = one_hot.clamp(smooth, 1.0 - smooth)
    p_t = (one_hot * probs).sum(1) + smooth
    return (-((1.0 - p_t) ** gamma) * p_t.log()).mean()


def dice_loss(prob: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Binary dice loss ``1 - mean_b dice_b`` of ``(B, H, W)`` probabilities against ``(B, H, W)`` 0/1 targets."""
    prob, target = prob.flatten(1), target.flatten(1).to(prob.dtype)
    intersection = (prob * target).sum(1)
    dice = (2.0 * intersection + smooth) / (prob.sum(1) + target.sum(1) + smooth)
    return 1.0 - dice.mean()


def image_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(B, 2)`` image logits against ``(B,)`` labels."""
    return F.cross_entropy(logits, labels.long())
