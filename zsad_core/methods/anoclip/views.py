"""The 22 test-time views AnoVL averages the image score over (``utils.py:aug`` in the MVTec script).

Order (index: view): 0 the image itself; 1-8 rotations by -pi/4, -3pi/16, -pi/8, -pi/16, +pi/16, +pi/8,
+3pi/16, +pi/4; 9-16 translations by (0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2), (0.1, 0.1),
(-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1) in ``affine_grid`` units (the image spans [-1, 1], so 10% and 5% of
its side); 17 horizontal flip; 18 grayscale; 19-21 rotations by 90, 180 and 270 degrees.

Rotations and translations are one batched ``affine_grid``/``grid_sample`` call (bilinear, reflection
padding, ``align_corners=True``, as the script). The script's quarter turns go through kornia's bilinear
``rotate``; on a square image they are exact permutations, so ``torch.rot90`` gives the same pixels without
interpolation error. Their direction does not matter: the score averages over all three turns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

ROTATION_ANGLES: tuple[float, ...] = tuple(math.pi * k / 16 for k in (-4, -3, -2, -1, 1, 2, 3, 4))
TRANSLATIONS: tuple[tuple[float, float], ...] = (
    (0.2, 0.2), (-0.2, 0.2), (-0.2, -0.2), (0.2, -0.2), (0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1),
)
NUM_VIEWS = 1 + len(ROTATION_ANGLES) + len(TRANSLATIONS) + 1 + 1 + 3
FIRST_ROTATION, FIRST_TRANSLATION, HFLIP, GRAYSCALE, FIRST_QUARTER_TURN = 1, 9, 17, 18, 19

# ITU-R BT.601 luma weights (kornia ``rgb_to_grayscale``'s default).
LUMA_WEIGHTS: tuple[float, float, float] = (0.299, 0.587, 0.114)


def affine_thetas() -> torch.Tensor:
    """``(16, 2, 3)`` float64 ``affine_grid`` matrices: the 8 small rotations, then the 8 translations."""
    angles = torch.tensor(ROTATION_ANGLES, dtype=torch.float64)
    cos, sin, zero = angles.cos(), angles.sin(), torch.zeros_like(angles)
    rotations = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    shifts = torch.tensor(TRANSLATIONS, dtype=torch.float64)
    translations = torch.eye(2, 3, dtype=torch.float64).repeat(len(TRANSLATIONS), 1, 1)
    translations[:, :, 2] = shifts
    return torch.cat([rotations, translations])


def warp(pixels: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Every image under every affine map, in one ``grid_sample`` call.

    Args:
        pixels: ``(B, C, S, S)``.
        thetas: ``(K, 2, 3)`` maps from output to input coordinates (``affine_grid`` convention).

    Returns:
        ``(B, K, C, S, S)``, reflection-padded, bilinear, ``align_corners=True``.
    """
    batch, count = pixels.shape[0], thetas.shape[0]
    stacked = pixels.unsqueeze(1).expand(batch, count, *pixels.shape[1:]).reshape(batch * count, *pixels.shape[1:])
    grid = F.affine_grid(thetas.to(pixels).repeat(batch, 1, 1), list(stacked.shape), align_corners=True)
    warped = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    return warped.view(batch, count, *pixels.shape[1:])


def grayscale(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], on_normalized: bool = False
) -> torch.Tensor:
    """Grayscale copy of normalised images, repeated over the 3 channels and normalised again.

    Args:
        pixels: ``(B, 3, S, S)`` normalised with ``mean``/``std``.
        mean, std: the backbone's pixel normalisation.
        on_normalized: apply the luma weights to the normalised values directly, as the AnoVL script does
            (kornia on the normalised tensor; the result is not the normalised gray image). Default False:
            un-normalise, take the luma, re-normalise, which is the grayscale image the view means.

    Returns:
        ``(B, 3, S, S)``.
    """
    weights = pixels.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    if on_normalized:
        return (pixels * weights).sum(1, keepdim=True).expand_as(pixels)
    mean_t, std_t = pixels.new_tensor(mean).view(1, 3, 1, 1), pixels.new_tensor(std).view(1, 3, 1, 1)
    luma = ((pixels * std_t + mean_t) * weights).sum(1, keepdim=True)  # (B, 1, S, S) in [0, 1] pixel units
    return (luma - mean_t) / std_t


def official_views(
    pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float], gray_on_normalized: bool = False
) -> torch.Tensor:
    """The 22 views of each image, in the order of the module docstring.

    Args:
        pixels: ``(B, 3, S, S)`` normalised square images.
        mean, std: the backbone's pixel normalisation (for the grayscale view).
        gray_on_normalized: see :func:`grayscale`.

    Returns:
        ``(B, 22, 3, S, S)``; view 0 is ``pixels`` itself.
    """
    if pixels.shape[-1] != pixels.shape[-2]:
        raise ValueError(f"the views assume square images, got {tuple(pixels.shape[-2:])}")
    parts = [
        pixels.unsqueeze(1),
        warp(pixels, affine_thetas()),
        pixels.flip(-1).unsqueeze(1),
        grayscale(pixels, mean, std, gray_on_normalized).unsqueeze(1),
        torch.stack([torch.rot90(pixels, k, dims=(-2, -1)) for k in (1, 2, 3)], dim=1),
    ]
    return torch.cat(parts, dim=1)
