"""CLIP-AD's scoring: feature surgery on the staged V-V taps, and the fine-tuned (SDP+) logit maps.

Pure functions on tensors; the loops run over the 4 taps, never over patches or images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from zsad_core.methods.ops import tokens_to_grid, upsample

ABNORMAL = 1  # text rows are [normal, abnormal] everywhere in CLIP-AD


def feature_surgery(tokens: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """CLIP Surgery's feature surgery of one tap (docs/methods.md, CLIP-AD), without its (B, L, C, D) intermediate.

    The official forms e_{i,c} = w_c (F_i ⊙ t_c) and r_i = mean_c e_{i,c} and sums e_{i,c} − r_i over the
    feature dimension. Summing first gives the same numbers from the ``(B, L, C)`` cosines alone:
    ``sim_{i,c} = w_c ⟨F_i, t_c⟩ − mean_c' w_c' ⟨F_i, t_c'⟩``; for two classes
    ``sim_abn = ½ (w_a ⟨F, t_a⟩ − w_n ⟨F, t_n⟩)``. The class weights ``w_c = p_c / mean_c p_c`` come from
    ``p = softmax_c ⟨F_cls, t_c⟩`` with no temperature, so they lie in (0, C) and sum to C; with unit inputs
    every ``|sim|`` is at most 1.

    Args:
        tokens: ``(B, 1+N, D)`` unit tokens of one tap, CLS first.
        text: ``(C, D)`` unit text vectors.

    Returns:
        ``(B, 1+N, C)`` similarities, CLS row included (the caller drops it).
    """
    cosine = tokens @ text.T  # (B, 1+N, C)
    weights = cosine[:, :1].softmax(-1)  # (B, 1, C), from the CLS row only
    weighted = cosine * (weights / weights.mean(-1, keepdim=True))
    return weighted - weighted.mean(-1, keepdim=True)


def surgery_map(taps: Sequence[torch.Tensor], text: torch.Tensor, grid: tuple[int, int], size: int) -> torch.Tensor:
    """SDP's raw abnormal map: feature surgery summed over taps, CLS dropped, upsampled (align_corners=False).

    The official upsamples both channels and then keeps the abnormal one; bilinear interpolation acts per
    channel, so only that channel is interpolated here. No min-max, no softmax (``get_similarity_map(...,
    norm=False)``).

    Args:
        taps: per tap, ``(B, 1+N, D)`` unit V-V tokens (CLS from the original path).
        text: ``(2, D)`` unit text vectors [normal, abnormal].
        grid: ``(rows, cols)``, rows * cols = N.
        size: output side S.

    Returns:
        ``(B, S, S)`` map with values in ``[-len(taps), len(taps)]``.
    """
    similarity = sum(feature_surgery(tokens, text) for tokens in taps)  # (B, 1+N, 2)
    patches = similarity[:, 1:, ABNORMAL : ABNORMAL + 1]  # (B, N, 1)
    return upsample(tokens_to_grid(patches, grid), size, align_corners=False)[:, 0]


def linear_probe_probs(
    tokens: torch.Tensor, text: torch.Tensor, grid: tuple[int, int], size: int, scale: float
) -> torch.Tensor:
    """SDP+ map of one tap: softmax over [normal, abnormal] of upsampled ``scale · cos`` logits.

    Logits are upsampled before the softmax, bilinearly with ``align_corners=True``, as the official
    train/test code (and APRIL-GAN) do.

    Args:
        tokens: ``(B, N, D)`` projected patch tokens (no CLS), any norm.
        text: ``(2, D)`` unit text vectors.
        grid: ``(rows, cols)``, rows * cols = N.
        size: output side S.
        scale: logit multiplier (100, CLIP's 1/0.07 rounded).

    Returns:
        ``(B, 2, S, S)`` probabilities.
    """
    logits = scale * F.normalize(tokens, dim=-1) @ text.T  # (B, N, 2)
    return upsample(tokens_to_grid(logits, grid), size, align_corners=True).softmax(1)
