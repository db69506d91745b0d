"""Vectorised scoring and post-processing shared by the methods (docs/methods.md, shared pieces).

Pure functions on tensors with documented shapes; no loops over patches or windows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def tokens_to_grid(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """``(B, N, C)`` patch values (no CLS) to ``(B, C, rows, cols)`` maps."""
    batch, count, channels = tokens.shape
    if count != grid[0] * grid[1]:
        raise ValueError(f"{count} tokens do not fill a {grid[0]}x{grid[1]} grid")
    return tokens.transpose(1, 2).reshape(batch, channels, grid[0], grid[1])


def cosine_logits(features: torch.Tensor, text: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Scaled cosine similarity of every token with every text vector.

    Args:
        features: ``(B, N, D)`` image tokens.
        text: ``(C, D)`` shared or ``(B, C, D)`` per-image text vectors.
        scale: multiplier (1/temperature); 1 for methods that use no temperature.

    Returns:
        ``(B, N, C)`` logits.
    """
    features = F.normalize(features, dim=-1)
    text = F.normalize(text, dim=-1)
    logits = features @ text.transpose(-1, -2) if text.dim() == 3 else features @ text.T
    return logits * scale


def upsample(maps: torch.Tensor, size: int, align_corners: bool) -> torch.Tensor:
    """Bilinear upsampling of ``(B, C, h, w)`` maps to ``(B, C, size, size)``.

    ``align_corners`` differs between methods (True for APRIL-GAN-style logit maps, False for
    AnomalyCLIP-style probability maps) and is part of each method's faithful definition.
    """
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=align_corners)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """The normalised 1-D kernel scipy.ndimage.gaussian_filter uses (radius = int(truncate * sigma + 0.5))."""
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).float()


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of ``(B, H, W)`` maps, equal to scipy's ``gaussian_filter(mode='reflect')``.

    The papers smooth with scipy on the CPU one map at a time; this is the same filter as a separable
    convolution on the batch, on whatever device the maps are. scipy's ``reflect`` mode repeats the edge
    pixel (``d c b a | a b c d``), which is torch's ``replicate`` for one pixel and ``symmetric`` beyond:
    the padding is built by flipping.
    """
    if sigma <= 0:
        return maps
    kernel = gaussian_kernel1d(sigma).to(maps.device, maps.dtype)
    radius = kernel.numel() // 2
    x = maps[:, None]
    x = _symmetric_pad(x, radius, dim=-1)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = _symmetric_pad(x, radius, dim=-2)
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x[:, 0]


def _symmetric_pad(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Pad ``radius`` values on both sides of ``dim`` by mirroring including the edge (scipy 'reflect')."""
    length = x.shape[dim]
    while radius > 0:
        step = min(radius, length)
        left = x.narrow(dim, 0, step).flip(dim)
        right = x.narrow(dim, x.shape[dim] - step, step).flip(dim)
        x = torch.cat([left, x, right], dim=dim)
        radius -= step
        length = x.shape[dim]
    return x


def mean_filter3x3(maps: torch.Tensor) -> torch.Tensor:
    """3x3 average of ``(B, C, h, w)`` maps with replicate padding (AnoVL's smoothing of the patch map)."""
    return F.avg_pool2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), kernel_size=3, stride=1)


def harmonic_mean(values: torch.Tensor, dim: int, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(Weighted) harmonic mean along ``dim``; ``weights`` marks which entries count (0/1), shaped like values."""
    if weights is None:
        return values.shape[dim] / (1.0 / values).sum(dim)
    return weights.sum(dim) / (weights / values).sum(dim)


def topk_mean(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the ``k`` largest entries of each row of ``(B, N)`` (k is clipped to N)."""
    return values.topk(min(k, values.shape[-1]), dim=-1).values.mean(-1)


def quarter_taps(num_layers: int) -> tuple[int, ...]:
    """Blocks at 1/4, 1/2, 3/4 and the end of the ViT: 6/12/18/24 on ViT-L, 3/6/9/12 on ViT-B (the papers' taps)."""
    return tuple(sorted({max(1, math.ceil(num_layers * q / 4)) for q in (1, 2, 3, 4)}))
