"""AUPRO: area under the per-region-overlap (PRO) curve up to a false-positive-rate limit, in two variants.

The PRO at a threshold t is the mean, over every connected ground-truth region of every image, of the
fraction of the region's pixels scoring above t. Mean over regions (not pixels) makes a small defect count as
much as a large one. Regions are 8-connected (diagonal neighbours join): that is what the papers' code gets
from ``skimage.measure.label``, whose default connectivity is ``ndim`` (8 neighbours in 2-D).

Both variants are computed from one :class:`~zsad_core.metrics.ranking.BinaryRanking` whose positive weights
are 1/area of each anomalous pixel's region: the sum of those weights over the pixels above t, divided by the
number of regions, is the PRO at t. So the PRO curve costs one cumulative sum, not a loop over thresholds x
regions (the papers' loop takes hours per dataset).

Variants:

* ``"exact"``: the definition of the MVTec AD evaluation code (Bergmann et al., IJCV 2021). Every distinct
  score is a threshold (``score >= t``); the curve runs from (0, 0) to (1, 1); it is integrated with the
  trapezoid rule up to ``fpr_limit``, linearly interpolated there, and divided by ``fpr_limit``, so a perfect
  map scores 1.
* ``"cflow"``: ``cal_pro_score`` from cflow-ad, copied by APRIL-GAN, AnomalyCLIP, VCP-CLIP, ViP2-CLIP and
  AA-CLIP, so it reproduces their PRO columns. Thresholds are ``np.arange(min, max, (max - min) / 200)``
  rounded to the maps' dtype (200 of them, occasionally 201 through rounding, never the max); a pixel is
  positive when ``score > t`` (strict, as that code's ``binary_amaps[amaps > th] = 1``); only points with FPR
  below ``fpr_limit`` are kept, their FPRs are min-max rescaled to [0, 1] and the trapezoid area is taken.
  The rescaling makes it differ from ``"exact"`` by about a point.

Degenerate cases (both variants): no anomalous pixel, or no normal pixel, gives NaN (PRO or FPR undefined).
A constant map gives 0.15 under ``"exact"`` (all pixels enter at the one threshold: the diagonal from (0, 0)
to (1, 1), whose area up to 0.3 is 0.045) and 0.0 under ``"cflow"`` (its grid is the single value min, and
nothing is above it). Under ``"cflow"``, when all kept points share one FPR (e.g. a perfect binary map: FPR 0
at every threshold) the rescaling would divide by zero and the papers' code returns NaN; here the mean PRO
of the kept points is returned instead, so a perfect map scores 1. When no point has FPR below the limit,
the result is 0.0.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from numpy.typing import ArrayLike

from zsad_core.metrics._arrays import as_binary, as_scores
from zsad_core.metrics.ranking import BinaryRanking, rank_binary

AuproVariant = Literal["exact", "cflow"]
AUPRO_VARIANTS: tuple[str, ...] = ("exact", "cflow")


def region_weights(masks: np.ndarray) -> np.ndarray:
    """Weight each anomalous pixel by 1/area of its 8-connected ground-truth region.

    Args:
        masks: ``(N, H, W)`` bool ground truth.

    Returns:
        ``(n_pos,)`` float64 weights in the order of ``masks[masks]`` (C order); they sum to the number of
        regions. One ``cv2.connectedComponents`` per image that has anomalous pixels.
    """
    parts = [np.empty(0, dtype=np.float64)]
    for mask in masks:
        if not mask.any():
            continue
        image = np.ascontiguousarray(mask).view(np.uint8)
        n_labels, labels = cv2.connectedComponents(image, connectivity=8, ltype=cv2.CV_32S)
        region = labels[mask]
        area = np.bincount(region, minlength=n_labels)
        parts.append(1.0 / area[region])
    return np.concatenate(parts)


def aupro_from_ranking(
    ranking: BinaryRanking,
    fpr_limit: float = 0.3,
    variant: AuproVariant = "exact",
    num_thresholds: int = 200,
) -> float:
    """AUPRO from a ranking built with :func:`region_weights` as positive weights.

    Args:
        ranking: pixels of a class, ranked with ``pos_weights=region_weights(masks)``.
        fpr_limit: upper end of the FPR range, in (0, 1].
        variant: ``"exact"`` or ``"cflow"`` (see the module docstring).
        num_thresholds: size of cflow's uniform grid; ignored by ``"exact"``.

    Returns:
        The normalised area in [0, 1], or NaN when no pixel is anomalous or none is normal.

    Raises:
        ValueError: on an unknown variant, a limit outside (0, 1], or a ranking without weights.
    """
    if variant not in AUPRO_VARIANTS:
        raise ValueError(f"variant must be one of {AUPRO_VARIANTS}, got {variant!r}")
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    if ranking.weighted_tp is None:
        raise ValueError("the ranking has no region weights; build it with pos_weights=region_weights(masks)")
    if ranking.n_pos == 0 or ranking.n_neg == 0:
        return float("nan")
    if variant == "exact":
        return _exact(ranking, fpr_limit)
    return _cflow(ranking, fpr_limit, num_thresholds)


def aupro(
    maps: ArrayLike,
    masks: ArrayLike,
    fpr_limit: float = 0.3,
    variant: AuproVariant = "exact",
    num_thresholds: int = 200,
) -> float:
    """AUPRO of anomaly maps against ground-truth masks.

    Args:
        maps: ``(N, H, W)`` anomaly maps (numpy or torch), higher means more anomalous.
        masks: ``(N, H, W)`` ground truth, bool or 0/1.
        fpr_limit: upper end of the FPR range, in (0, 1].
        variant: ``"exact"`` (official MVTec AU-PRO) or ``"cflow"`` (the papers' ``cal_pro_score``).
        num_thresholds: size of cflow's uniform grid; ignored by ``"exact"``.

    Returns:
        The normalised area in [0, 1]; NaN when no pixel is anomalous or none is normal.
    """
    scores = as_scores(maps, 3, "maps")
    truth = as_binary(masks, scores.shape, "masks")
    ranking = rank_binary(scores, truth, pos_weights=region_weights(truth))
    return aupro_from_ranking(ranking, fpr_limit, variant, num_thresholds)


def _exact(ranking: BinaryRanking, fpr_limit: float) -> float:
    # Between two positive levels the curve is flat (only FP grows); at a level it steps from
    # (FPR just above it, previous PRO) to (FPR at it, new PRO), diagonally when negatives tie with it.
    # Those two points per level, plus (0, 0) and (1, 1), are every vertex of the all-thresholds curve.
    pro = ranking.weighted_tp / ranking.weighted_tp[-1]
    fpr = np.empty(2 * pro.size + 2)
    fpr[0], fpr[-1] = 0.0, 1.0
    fpr[1:-1:2] = ranking.fp_gt / ranking.n_neg
    fpr[2:-1:2] = ranking.fp_ge / ranking.n_neg
    pros = np.empty_like(fpr)
    pros[0], pros[-1] = 0.0, 1.0
    pros[1:-1:2] = np.concatenate([[0.0], pro[:-1]])
    pros[2:-1:2] = pro
    return _area_up_to(fpr, pros, fpr_limit) / fpr_limit


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline (x, y), x non-decreasing from 0, for x in [0, x_max]."""
    inside = int(np.searchsorted(x, x_max, side="right"))
    xs, ys = x[:inside], y[:inside]
    if inside < x.size:
        x0, x1, y0, y1 = x[inside - 1], x[inside], y[inside - 1], y[inside]
        xs = np.append(xs, x_max)
        ys = np.append(ys, y0 + (y1 - y0) * (x_max - x0) / (x1 - x0))
    return float(np.trapezoid(ys, xs))


def _cflow_thresholds(ranking: BinaryRanking, num_thresholds: int) -> np.ndarray:
    lo, hi = ranking.score_range
    if lo == hi:
        # np.arange(lo, hi, 0) raises; the papers' grid has nothing to offer here but its first value.
        return np.array([lo])
    # Same expression as cal_pro_score, so the same grid, arange's rounding included. arange returns float64;
    # the cast rounds the thresholds to the maps' dtype, which is how numpy 1.x (the papers' environments,
    # e.g. AnomalyCLIP pins scipy 1.9 and torch 2.0) compared a float32 array with them. numpy 2 compares in
    # float64 instead; that moves only pixels equal to a rounded threshold, about 5e-6 of area on a 31M-pixel
    # synthetic class.
    return np.arange(lo, hi, (hi - lo) / num_thresholds).astype(lo.dtype)


def _cflow(ranking: BinaryRanking, fpr_limit: float, num_thresholds: int) -> float:
    thresholds = _cflow_thresholds(ranking, num_thresholds)
    fp = ranking.n_neg - np.searchsorted(ranking.neg_sorted, thresholds, side="right")
    levels_above = ranking.levels.size - np.searchsorted(ranking.levels[::-1], thresholds, side="right")
    weighted = np.concatenate([[0.0], ranking.weighted_tp])[levels_above]
    pro = weighted / ranking.weighted_tp[-1]
    fpr = fp / ranking.n_neg
    keep = fpr < fpr_limit
    if not keep.any():
        return 0.0
    fpr, pro = fpr[keep], pro[keep]
    width = fpr.max() - fpr.min()
    if width == 0:
        return float(pro.mean())
    # The thresholds ascend, so the FPRs descend: reverse for a left-to-right trapezoid.
    return float(np.trapezoid(pro[::-1], (fpr[::-1] - fpr.min()) / width))
