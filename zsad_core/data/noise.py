"""Vectorised gradient (Perlin) noise for the procedural textures and the Perlin-shaped defects.

Why our own: a few lines of numpy give smooth, seedable, resolution-independent noise without another
dependency, and anomaly synthesis in the DRAEM family thresholds exactly this kind of noise to get
irregular, natural-looking defect shapes.
"""

from __future__ import annotations

import numpy as np


def _fade(t: np.ndarray) -> np.ndarray:
    # Perlin's quintic 6t^5 - 15t^4 + 10t^3: zero first and second derivative at cell borders, so no creases.
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One octave of 2-D gradient noise.

    A random unit gradient sits on each corner of a ``cells`` grid laid over the image; each pixel blends
    the dot products of the four surrounding gradients with its offsets, weighted by the quintic fade.
    The image size need not be a multiple of the grid.

    Args:
        shape: ``(H, W)`` of the output.
        cells: ``(cy, cx)`` grid cells along each axis (larger = finer detail), each >= 1.
        rng: source of the gradients.

    Returns:
        ``(H, W)`` float32 noise, roughly in [-1, 1], zero at every lattice point.
    """
    height, width = shape
    cells_y, cells_x = cells
    if min(height, width, cells_y, cells_x) < 1:
        raise ValueError(f"shape and cells must be positive, got {shape} and {cells}")
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(cells_y + 1, cells_x + 1))
    grad_y, grad_x = np.sin(angles), np.cos(angles)
    pos_y = np.arange(height) * (cells_y / height)  # (H,) lattice coordinates
    pos_x = np.arange(width) * (cells_x / width)  # (W,)
    cell_y, cell_x = pos_y.astype(np.int64), pos_x.astype(np.int64)
    frac_y, frac_x = (pos_y - cell_y)[:, None], (pos_x - cell_x)[None, :]  # (H, 1), (1, W)

    def corner(dy: int, dx: int) -> np.ndarray:
        rows, cols = (cell_y + dy)[:, None], (cell_x + dx)[None, :]
        return grad_y[rows, cols] * (frac_y - dy) + grad_x[rows, cols] * (frac_x - dx)  # (H, W)

    fade_y, fade_x = _fade(frac_y), _fade(frac_x)
    top = corner(0, 0) + fade_x * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + fade_x * (corner(1, 1) - corner(1, 0))
    # sqrt(2) stretches the theoretical range [-1/sqrt(2), 1/sqrt(2)] to about [-1, 1].
    return (np.sqrt(2.0) * (top + fade_y * (bottom - top))).astype(np.float32)


def fractal_noise(
    shape: tuple[int, int],
    cells: int,
    rng: np.random.Generator,
    *,
    octaves: int = 4,
    persistence: float = 0.5,
) -> np.ndarray:
    """Sum of Perlin octaves, each twice as fine and ``persistence`` times as strong (fBm).

    Args:
        shape: ``(H, W)`` of the output.
        cells: grid cells of the coarsest octave along each axis.
        rng: source of the gradients.
        octaves: number of octaves.
        persistence: amplitude ratio between consecutive octaves.

    Returns:
        ``(H, W)`` float32, rescaled so that the amplitudes sum to 1 (roughly [-1, 1]).
    """
    total = np.zeros(shape, dtype=np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        grid = cells * 2**octave
        total += amplitude * perlin_noise(shape, (grid, grid), rng)
        norm += amplitude
        amplitude *= persistence
    return total / np.float32(norm)
