"""Score drift: has a camera's recent image-score distribution moved away from its calibration set?

Why: a threshold calibrated for a 1 % false-reject rate keeps that rate only while good frames score like the
calibration goods. Lighting, a moved camera or a new product variant shift the scores long before anyone
labels a frame, and the anomaly rate alone cannot tell a drift from a real defect burst.

The statistic is the population stability index (PSI) of a rolling window of scores over the calibration set's
decile bins: ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` with ``e_i`` the calibration fraction of bin ``i`` and
``a_i`` the window's. Why PSI and these bins: the bin edges are fixed at calibration, so a replica updates it
with one ``searchsorted`` per score and no stored calibration scores; it reacts to shifts anywhere in the
distribution, not only in the tail; and its conventional levels are known to operators: below 0.1 stable,
0.1-0.25 a moderate shift, above 0.25 a significant one (the credit-scorecard convention, e.g. Siddiqi,
*Credit Risk Scorecards*, Wiley 2006). A window is flagged from 0.25 on.

Sampling noise inflates PSI on small samples (about ``(bins - 1) * (1 / window + 1 / n_calibration)`` with no
drift at all: 0.135 for a 100-score window over 200 calibration goods with 10 bins), so windows of fewer than
:data:`MIN_WINDOW` scores are never flagged. Empty bins are counted as :data:`EMPTY_BIN_FRACTION` so the
logarithm stays finite.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zsad_core.decisions.thresholds import CalibrationError

BINS = 10
PSI_DRIFTED = 0.25
MIN_WINDOW = 100
EMPTY_BIN_FRACTION = 1e-4


@dataclass(frozen=True)
class DriftResult:
    """The PSI of one window and whether it counts as drift.

    Attributes:
        statistic: the PSI (0 for identical bin fractions).
        drifted: ``statistic >= threshold`` and the window has at least ``min_window`` scores.
        window: scores in the window.
        threshold: the PSI from which a window is flagged.
    """

    statistic: float
    drifted: bool
    window: int
    threshold: float


@dataclass(frozen=True)
class DriftReference:
    """The calibration set's score bins: interior edges and the fraction of calibration scores in each bin.

    A score equal to an edge falls in the bin above it. Tied calibration scores can merge quantiles, so
    edges are deduplicated and fractions counted, not assumed to be ``1 / bins``.
    """

    edges: tuple[float, ...]
    fractions: tuple[float, ...]

    @classmethod
    def from_scores(cls, scores: np.ndarray, bins: int = BINS) -> DriftReference:
        """Bins at the calibration scores' quantiles ``1/bins, ..., (bins-1)/bins``.

        Raises:
            CalibrationError: fewer scores than bins, non-finite scores, or fewer than two bins.
        """
        values = np.asarray(scores, dtype=np.float64).ravel()
        if bins < 2:
            raise CalibrationError(f"drift needs at least 2 bins, got {bins}")
        if values.size < bins:
            raise CalibrationError(f"drift bins need at least {bins} calibration scores, got {values.size}")
        if not np.isfinite(values).all():
            raise CalibrationError("calibration scores for drift bins must be finite")
        edges = np.unique(np.quantile(values, np.arange(1, bins) / bins))
        fractions = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1) / values.size
        return cls(tuple(float(e) for e in edges), tuple(float(f) for f in fractions))

    def compare(
        self, window: np.ndarray, *, threshold: float = PSI_DRIFTED, min_window: int = MIN_WINDOW
    ) -> DriftResult:
        """The PSI of ``window`` (recent image scores) against these bins.

        Raises:
            CalibrationError: the window is empty or holds non-finite scores.
        """
        values = np.asarray(window, dtype=np.float64).ravel()
        if values.size == 0:
            raise CalibrationError("a drift window needs at least one score")
        if not np.isfinite(values).all():
            raise CalibrationError("drift window scores must be finite")
        counts = np.bincount(
            np.searchsorted(np.asarray(self.edges), values, side="right"), minlength=len(self.fractions)
        )
        actual = np.maximum(counts / values.size, EMPTY_BIN_FRACTION)
        expected = np.maximum(np.asarray(self.fractions), EMPTY_BIN_FRACTION)
        statistic = float(np.sum((actual - expected) * np.log(actual / expected)))
        return DriftResult(statistic, values.size >= min_window and statistic >= threshold, values.size, threshold)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields (stored in the calibration record)."""
        return {"edges": list(self.edges), "fractions": list(self.fractions)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftReference:
        """The inverse of :meth:`to_dict`.

        Raises:
            CalibrationError: the fields are missing or inconsistent.
        """
        try:
            edges = tuple(float(e) for e in data["edges"])
            fractions = tuple(float(f) for f in data["fractions"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"a drift reference needs numeric edges and fractions: {exc}") from exc
        if len(fractions) != len(edges) + 1 or list(edges) != sorted(edges):
            raise CalibrationError("a drift reference needs sorted edges and one more fraction than edges")
        return cls(edges, fractions)
