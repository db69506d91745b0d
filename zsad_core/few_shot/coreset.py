"""Greedy k-center coreset selection, the memory bound PatchCore uses for its patch bank.

Why k-center: the nearest-neighbour distance of a test patch to the coreset exceeds its distance to the full
memory by at most the coreset radius (the largest distance of a dropped patch to its nearest kept one), so
the bound on how much the map can change is known and reported. Greedy selection (always add the patch
farthest from the current set) is within a factor 2 of the optimal radius (Gonzalez 1985).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Coreset:
    """A selection out of a point set.

    Attributes:
        indices: ``(K,)`` int64 positions of the kept points, in the order they were picked.
        radius: largest Euclidean distance of any point to its nearest kept point (0 when all are kept).
    """

    indices: torch.Tensor
    radius: float


def greedy_k_center(points: torch.Tensor, count: int, start: int = 0) -> Coreset:
    """Pick ``count`` rows of ``points`` by farthest-point traversal, on the points' device.

    Args:
        points: ``(M, D)`` features (any float dtype; distances are computed in float32).
        count: how many points to keep; ``count >= M`` keeps all of them.
        start: the first pick (deterministic; PatchCore draws it at random).

    Returns:
        The :class:`Coreset`. Each step updates the distance of every point to the set with one ``(M, D)``
        pass, so the cost is O(count * M * D) and the memory O(M).
    """
    if points.dim() != 2 or points.shape[0] == 0:
        raise ValueError(f"points must be a non-empty (M, D) tensor, got shape {tuple(points.shape)}")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    total = points.shape[0]
    if not 0 <= start < total:
        raise ValueError(f"start must lie in 0..{total - 1}, got {start}")
    if count >= total:
        return Coreset(torch.arange(total, device=points.device), 0.0)
    points = points.float()
    picked = torch.empty(count, dtype=torch.int64, device=points.device)
    nearest = torch.full((total,), float("inf"), device=points.device)
    current = start
    for step in range(count):
        picked[step] = current
        nearest = torch.minimum(nearest, (points - points[current]).pow(2).sum(-1))
        current = int(nearest.argmax())
    return Coreset(picked, float(nearest.max().sqrt()))
