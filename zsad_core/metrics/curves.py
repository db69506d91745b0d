"""AUROC, average precision and F1-max, at pixel and image level, as the papers compute them.

The papers call scikit-learn (``roc_auc_score``, ``average_precision_score``, and the max of 2PR/(P+R) over
``precision_recall_curve``) on all pixels of a class. Here the same numbers come from one shared
:class:`~zsad_core.metrics.ranking.BinaryRanking`, so they agree with scikit-learn, ties included, while the
class's pixels are sorted once for all pixel metrics (see :func:`zsad_core.metrics.evaluate`).

Undefined cases return NaN instead of raising, so that a class without anomalies drops out of a macro mean
(``np.nanmean``): AUROC needs both classes; AP and F1-max need at least one positive.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from zsad_core.metrics._arrays import as_binary, as_scores
from zsad_core.metrics.ranking import BinaryRanking, rank_binary


def auroc_from_ranking(ranking: BinaryRanking) -> float:
    """Area under the ROC curve, NaN without positives or without negatives.

    Uses the Mann-Whitney form: the fraction of (positive, negative) pairs ranked the right way round, a tie
    counting one half. This is exactly the trapezoidal area under scikit-learn's tie-collapsed ROC curve, and
    with integer counts it has no rounding until the final division.
    """
    if ranking.n_pos == 0 or ranking.n_neg == 0:
        return float("nan")
    count = np.diff(ranking.tp, prepend=0)
    below = ranking.n_neg - ranking.fp_ge
    tied = ranking.fp_ge - ranking.fp_gt
    twice_u = int(np.dot(count, 2 * below + tied))
    return twice_u / (2 * ranking.n_pos * ranking.n_neg)


def ap_from_ranking(ranking: BinaryRanking) -> float:
    """Average precision, the sum of (R_k - R_{k-1}) * P_k over thresholds; NaN without positives.

    This is scikit-learn's definition. Recall moves only at positive levels, so the sum runs over them; at
    each, the precision counts every negative tied with the level as a false positive (scikit-learn's
    threshold is ``score >= t``).
    """
    if ranking.n_pos == 0:
        return float("nan")
    count = np.diff(ranking.tp, prepend=0)
    precision = ranking.tp / (ranking.tp + ranking.fp_ge)
    return float(np.dot(count, precision) / ranking.n_pos)


def f1_max_from_ranking(ranking: BinaryRanking) -> float:
    """Largest F1 = 2TP / (2TP + FP + FN) over all thresholds; NaN without positives.

    For a fixed TP the F1 only drops as FP grows, so the maximum lies at a positive level; thresholds between
    levels never win. This is the papers' ``max(2PR/(P+R))`` over ``precision_recall_curve``.
    """
    if ranking.n_pos == 0:
        return float("nan")
    return float(np.max(2 * ranking.tp / (ranking.tp + ranking.fp_ge + ranking.n_pos)))


def _rank_pixels(maps: ArrayLike, masks: ArrayLike) -> BinaryRanking:
    scores = as_scores(maps, 3, "maps")
    return rank_binary(scores, as_binary(masks, scores.shape, "masks"))


def _rank_images(scores: ArrayLike, labels: ArrayLike) -> BinaryRanking:
    values = as_scores(scores, 1, "scores")
    return rank_binary(values, as_binary(labels, values.shape, "labels"))


def pixel_auroc(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel AUROC over all pixels of all images.

    Args:
        maps: ``(N, H, W)`` anomaly maps (numpy or torch), higher means more anomalous.
        masks: ``(N, H, W)`` ground truth, bool or 0/1.

    Returns:
        The AUROC in [0, 1]; NaN when the masks are all 0 or all 1.
    """
    return auroc_from_ranking(_rank_pixels(maps, masks))


def pixel_ap(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel average precision over all pixels; shapes as :func:`pixel_auroc`; NaN if no anomalous pixel."""
    return ap_from_ranking(_rank_pixels(maps, masks))


def pixel_f1_max(maps: ArrayLike, masks: ArrayLike) -> float:
    """Pixel F1-max over all pixels; shapes as :func:`pixel_auroc`; NaN when no pixel is anomalous."""
    return f1_max_from_ranking(_rank_pixels(maps, masks))


def image_auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image AUROC.

    Args:
        scores: ``(N,)`` image anomaly scores (numpy or torch).
        labels: ``(N,)`` 1 for an anomalous image, 0 for a normal one.

    Returns:
        The AUROC in [0, 1]; NaN when all labels are equal.
    """
    return auroc_from_ranking(_rank_images(scores, labels))


def image_ap(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image average precision; shapes as :func:`image_auroc`; NaN when no image is anomalous."""
    return ap_from_ranking(_rank_images(scores, labels))


def image_f1_max(scores: ArrayLike, labels: ArrayLike) -> float:
    """Image F1-max; shapes as :func:`image_auroc`; NaN when no image is anomalous."""
    return f1_max_from_ranking(_rank_images(scores, labels))
