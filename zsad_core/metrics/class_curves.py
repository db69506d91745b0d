"""Per-class ROC, PR and PRO curves and score lists, from the same rankings as the metrics.

Why here and not in the report: evaluation computes them class by class while the class's maps are still in
memory (:func:`zsad_core.evaluation.evaluate_method` with ``curves=True``), and the drawing in
:mod:`zsad_core.report` only reads them. Because they come from the same
:class:`~zsad_core.metrics.ranking.BinaryRanking` as the metrics, the area under a drawn ROC curve *is* the
reported AUROC (and likewise AP and exact AU-PRO).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from zsad_core.metrics.pro import region_weights
from zsad_core.metrics.ranking import BinaryRanking, rank_binary

# A curve with more vertices than this is thinned for storage and drawing (a 518 x 518 class has millions of
# distinct pixel scores); the metrics themselves always come from the full ranking.
MAX_CURVE_POINTS = 4096


@dataclass(frozen=True, eq=False)
class Curve:
    """A curve's vertices, ``x`` and ``y`` of equal length, ``x`` non-decreasing."""

    x: np.ndarray
    y: np.ndarray


@dataclass(frozen=True, eq=False)
class ClassCurves:
    """Everything plotted for one class; pixel curves are None without masks, image curves None without
    both labels present.

    Attributes:
        pixel_roc: (FPR, TPR) of all pixels of the class, from (0, 0) to (1, 1).
        pixel_pr: (recall, precision) at each distinct anomalous-pixel score, recall increasing.
        pixel_pro: (FPR, PRO), the exact AU-PRO's curve from (0, 0) to (1, 1).
        image_roc, image_pr: the same over image scores.
        normal_scores, anomalous_scores: image scores by label, for the histogram.
    """

    pixel_roc: Curve | None
    pixel_pr: Curve | None
    pixel_pro: Curve | None
    image_roc: Curve | None
    image_pr: Curve | None
    normal_scores: np.ndarray
    anomalous_scores: np.ndarray


def roc_curve(ranking: BinaryRanking) -> Curve | None:
    """ROC vertices: at each level the curve runs flat to the negatives above it, then diagonally through
    the negatives tied with it, so its trapezoid area is the Mann-Whitney AUROC. None if a side is empty."""
    if ranking.n_pos == 0 or ranking.n_neg == 0:
        return None
    tpr = ranking.tp / ranking.n_pos
    x = np.concatenate([[0.0], np.column_stack([ranking.fp_gt, ranking.fp_ge]).ravel() / ranking.n_neg, [1.0]])
    y = np.concatenate([[0.0], np.column_stack([np.concatenate([[0.0], tpr[:-1]]), tpr]).ravel(), [1.0]])
    return _thin(Curve(x, y))


def pr_curve(ranking: BinaryRanking) -> Curve | None:
    """(recall, precision) at every level; AP is ``sum(diff(recall, prepend=0) * precision)``."""
    if ranking.n_pos == 0:
        return None
    return _thin(Curve(ranking.tp / ranking.n_pos, ranking.tp / (ranking.tp + ranking.fp_ge)))


def pro_curve(ranking: BinaryRanking) -> Curve | None:
    """(FPR, PRO) of a ranking with region weights, the curve whose area to FPR 0.3 is the exact AU-PRO."""
    if ranking.weighted_tp is None or ranking.n_pos == 0 or ranking.n_neg == 0:
        return None
    pro = ranking.weighted_tp / ranking.weighted_tp[-1]
    x = np.concatenate([[0.0], np.column_stack([ranking.fp_gt, ranking.fp_ge]).ravel() / ranking.n_neg, [1.0]])
    y = np.concatenate([[0.0], np.column_stack([np.concatenate([[0.0], pro[:-1]]), pro]).ravel(), [1.0]])
    return _thin(Curve(x, y))


def _thin(curve: Curve) -> Curve:
    if curve.x.size <= MAX_CURVE_POINTS:
        return curve
    keep = np.unique(np.linspace(0, curve.x.size - 1, MAX_CURVE_POINTS).round().astype(np.int64))
    return Curve(curve.x[keep], curve.y[keep])


def class_curves(maps: np.ndarray | None, masks: np.ndarray | None, scores: np.ndarray,
                 labels: np.ndarray) -> ClassCurves:
    """The curves of one class from its ``(n, H, W)`` maps and masks (or None) and ``(n,)`` scores/labels."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pixel: tuple[Curve | None, ...] = (None, None, None)
    if maps is not None and masks is not None:
        truth = np.asarray(masks, dtype=bool)
        ranking = rank_binary(np.asarray(maps), truth, pos_weights=region_weights(truth))
        pixel = (roc_curve(ranking), pr_curve(ranking), pro_curve(ranking))
    image = rank_binary(scores, labels)
    return ClassCurves(*pixel, roc_curve(image), pr_curve(image),
                       scores[~labels], scores[labels])
