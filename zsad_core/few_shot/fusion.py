"""How a zero-shot result and a reference memory's distances become one map and one score.

Map fusion (``MapFusion``):

* ``mean``: ``(1 - w) * zero_shot + w * few_shot``. With w = 0.5 this is WinCLIP+'s average of the language
  and visual maps; APRIL-GAN adds the two maps, the same ranking up to a factor of 2.
* ``harmonic``: weighted harmonic mean ``1 / ((1 - w) / zero_shot + w / few_shot)``, which stays low unless
  both sources call a pixel anomalous (the aggregation WinCLIP uses across windows). Defined for positive
  maps; values are clamped to ``eps`` first, so a method whose maps can be negative should use ``mean``.

Score fusion (``ScoreFusion``), per image, so no test-set statistics are needed:

* ``mean``: ``(1 - w) * zero_shot_score + w * max(few_shot map)``, the per-image form of the APRIL-GAN and
  WinCLIP+ few-shot score (the papers min-max normalise both terms over a class's test set first).
* ``few_shot_max``: ``max(few_shot map)`` alone, PatchCore's image score.
"""

from __future__ import annotations

from typing import Literal

import torch

MapFusion = Literal["mean", "harmonic"]
ScoreFusion = Literal["mean", "few_shot_max"]
MAP_FUSIONS: tuple[str, ...] = ("mean", "harmonic")
SCORE_FUSIONS: tuple[str, ...] = ("mean", "few_shot_max")


def fuse_maps(
    zero_shot: torch.Tensor, few_shot: torch.Tensor, mode: MapFusion, weight: float, eps: float = 1e-6
) -> torch.Tensor:
    """Fuse ``(B, H, W)`` maps; ``weight`` is the few-shot share in [0, 1]."""
    _check_weight(weight)
    if mode == "mean":
        return (1.0 - weight) * zero_shot + weight * few_shot
    if mode == "harmonic":
        return 1.0 / ((1.0 - weight) / zero_shot.clamp_min(eps) + weight / few_shot.clamp_min(eps))
    raise ValueError(f"map fusion must be one of {MAP_FUSIONS}, got {mode!r}")


def fuse_scores(zero_shot: torch.Tensor, few_shot_map: torch.Tensor, mode: ScoreFusion, weight: float) -> torch.Tensor:
    """``(B,)`` scores from ``(B,)`` zero-shot scores and the ``(B, H, W)`` few-shot map."""
    _check_weight(weight)
    peak = few_shot_map.flatten(1).amax(1)
    if mode == "mean":
        return (1.0 - weight) * zero_shot + weight * peak
    if mode == "few_shot_max":
        return peak
    raise ValueError(f"score fusion must be one of {SCORE_FUSIONS}, got {mode!r}")


def _check_weight(weight: float) -> None:
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"the few-shot weight must lie in [0, 1], got {weight}")
