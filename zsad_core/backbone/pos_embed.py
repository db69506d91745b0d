"""Position-embedding interpolation, so a ViT trained at one input size runs at another.

The papers run ViT-L/14@336 at 518 px (24x24 -> 37x37 patches); VCP-CLIP interpolates bicubically with
antialiasing once at load time, AnomalyCLIP/ViP2-CLIP bilinearly. Both are offered; at the native grid the
function returns its input unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

PosInterpolation = Literal["bicubic", "bilinear"]


def resize_pos_embed(
    pos_embed: torch.Tensor,
    grid: tuple[int, int],
    interpolation: PosInterpolation = "bicubic",
    num_prefix_tokens: int = 1,
) -> torch.Tensor:
    """Resize a ViT position embedding to a new patch grid.

    Args:
        pos_embed: ``(P + G*G, W)``: P prefix (class) rows, then a square grid of G*G rows.
        grid: target ``(rows, cols)``.
        interpolation: ``bicubic`` (default) or ``bilinear``; antialiasing is on, which only matters when
            shrinking.
        num_prefix_tokens: how many leading rows are not part of the grid.

    Returns:
        ``(P + rows*cols, W)`` in the input's dtype; the input itself when the grid is unchanged.
    """
    prefix, patches = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    old = math.isqrt(patches.shape[0])
    if old * old != patches.shape[0]:
        raise ValueError(f"position embedding has {patches.shape[0]} grid rows, not a square number")
    if (old, old) == tuple(grid):
        return pos_embed
    image = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2).float()
    image = F.interpolate(image, size=tuple(grid), mode=interpolation, align_corners=False, antialias=True)
    patches = image.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([prefix, patches], dim=0)
