"""Image and pixel thresholds from scored calibration images, with what each choice is expected to cost.

Why not a number in a YAML file: scores of different methods, backbones and products live on different
scales, so a fixed threshold means nothing until it is tied to a rate an operator can reason about. Two rules:

* **Target false-reject rate on goods** (only known-good images). The threshold is the k-th smallest good score,
  ``k = ceil((n + 1) * (1 - target))`` (the split-conformal rank). For exchangeable continuous scores the
  probability that a future good frame scores at or above the k-th of n goods is a Beta(n - k + 1, k) variable,
  whatever the score distribution: its mean ``(n - k + 1) / (n + 1)`` is at most the target, and its
  ``confidence`` quantile is the upper bound reported with the choice. The bound is what makes small sets
  honest: with 200 goods and a 1 % target the threshold is the 199th score, expected false-reject 1.0 %, but at
  95 % confidence only "below 2.4 %"; :func:`goods_needed` says how many goods bring the bound to the target.
  This is the exact order-statistic (Clopper-Pearson-type) bound, not a normal approximation, which is badly
  wrong at rates near zero with few samples.
* **F1-max** (goods and bads): the threshold with the highest F1 on the labelled set, for when defects are known.
  Its false-reject bound is the one-sided Clopper-Pearson bound of the goods rejected in the set.

Frames are anomalous when ``score >= threshold`` (as in the result store). Ties break the distribution-free
argument (quantised scores): the in-set rates are therefore always reported next to the bounds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zsad_core.errors import ZsadError
from zsad_core.metrics.ranking import rank_binary

DEFAULT_CONFIDENCE = 0.95


class CalibrationError(ZsadError, ValueError):
    """Scores or settings that no threshold can be calibrated from (empty, non-finite, a rate outside (0, 1))."""

    reason = "bad_calibration"


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold and the evidence for it.

    Attributes:
        threshold: frames (pixels) scoring at or above it are anomalous.
        rule: ``false_reject`` or ``f1_max``.
        n_good, n_bad: scores the choice was made from.
        target_false_reject: the asked-for rate (``false_reject`` rule only).
        confidence: the level of ``false_reject_bound``.
        expected_false_reject: the mean false-reject rate on future goods (``false_reject`` rule), else the
            rate in the set.
        false_reject_bound: the rate future goods stay below with probability ``confidence``.
        set_false_reject: fraction of the given goods at or above the threshold.
        set_miss_rate: fraction of the given bads below it (``None`` without bads).
        f1: F1 on the given set (``None`` without bads).
    """

    threshold: float
    rule: str
    n_good: int
    n_bad: int
    target_false_reject: float | None
    confidence: float
    expected_false_reject: float
    false_reject_bound: float
    set_false_reject: float
    set_miss_rate: float | None = None
    f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly fields."""
        return asdict(self)


def false_reject_threshold(
    good_scores: np.ndarray, target: float, confidence: float = DEFAULT_CONFIDENCE
) -> ThresholdChoice:
    """The order-statistic threshold for a target false-reject rate on goods (module docstring).

    With too few goods for the target (``n + 1 < 1 / target``) the threshold is the highest good score, and
    ``expected_false_reject`` (``1 / (n + 1)``) shows that the target is out of reach.

    Raises:
        CalibrationError: no scores, non-finite scores, or ``target``/``confidence`` outside (0, 1).
    """
    scores = _finite_scores(good_scores, "good")
    _check_rate(target, "target false-reject rate")
    _check_rate(confidence, "confidence")
    n = scores.size
    rank = min(n, max(1, math.ceil(round((n + 1) * (1.0 - target), 9))))
    threshold = float(np.sort(scores)[rank - 1])
    return ThresholdChoice(
        threshold=threshold,
        rule="false_reject",
        n_good=n,
        n_bad=0,
        target_false_reject=target,
        confidence=confidence,
        expected_false_reject=(n - rank + 1) / (n + 1),
        false_reject_bound=false_reject_upper_bound(n, rank, confidence),
        set_false_reject=float(np.mean(scores >= threshold)),
    )


def f1_max_threshold(
    good_scores: np.ndarray, bad_scores: np.ndarray, confidence: float = DEFAULT_CONFIDENCE
) -> ThresholdChoice:
    """The threshold with the highest F1 (bads positive) on the labelled set.

    Pixel thresholds use it too, with masked pixels as ``bad_scores`` and the rest as ``good_scores``.

    Raises:
        CalibrationError: either set is empty or holds non-finite scores.
    """
    goods = _finite_scores(good_scores, "good")
    bads = _finite_scores(bad_scores, "bad")
    _check_rate(confidence, "confidence")
    scores = np.concatenate([goods, bads])
    labels = np.concatenate([np.zeros(goods.size, bool), np.ones(bads.size, bool)])
    ranking = rank_binary(scores, labels)
    f1 = 2 * ranking.tp / (ranking.tp + ranking.fp_ge + ranking.n_pos)
    best = int(np.argmax(f1))
    rejected = int(ranking.fp_ge[best])
    return ThresholdChoice(
        threshold=float(ranking.levels[best]),
        rule="f1_max",
        n_good=goods.size,
        n_bad=bads.size,
        target_false_reject=None,
        confidence=confidence,
        expected_false_reject=rejected / goods.size,
        false_reject_bound=beta_quantile(rejected + 1, goods.size - rejected, confidence)
        if rejected < goods.size
        else 1.0,
        set_false_reject=rejected / goods.size,
        set_miss_rate=1.0 - int(ranking.tp[best]) / bads.size,
        f1=float(f1[best]),
    )


def false_reject_upper_bound(n: int, rank: int, confidence: float = DEFAULT_CONFIDENCE) -> float:
    """The ``confidence`` quantile of the false-reject rate of the ``rank``-th smallest of ``n`` good scores.

    That rate is Beta(n - rank + 1, rank) distributed for exchangeable continuous scores.
    """
    if not 1 <= rank <= n:
        raise CalibrationError(f"rank must lie in [1, {n}], got {rank}")
    return beta_quantile(n - rank + 1, rank, confidence)


def goods_needed(target: float, confidence: float = DEFAULT_CONFIDENCE) -> int:
    """The fewest goods whose highest score keeps the false-reject rate below ``target`` at ``confidence``.

    The top of n goods has a Beta(1, n) rate, below ``target`` with probability ``1 - (1 - target)^n``.
    """
    _check_rate(target, "target false-reject rate")
    _check_rate(confidence, "confidence")
    return math.ceil(math.log(1.0 - confidence) / math.log(1.0 - target))


def beta_quantile(a: int, b: int, q: float) -> float:
    """The ``q`` quantile of Beta(a, b) for positive integers, by bisection on its binomial-tail CDF.

    Why not scipy: zsad_core keeps to numpy, and integer parameters make the CDF an exact binomial sum
    (``P(Beta(a, b) <= x) = P(Binomial(a + b - 1, x) >= a)``).
    """
    if a < 1 or b < 1:
        raise CalibrationError(f"beta parameters must be positive integers, got ({a}, {b})")
    low, high = 0.0, 1.0
    for _ in range(64):
        middle = (low + high) / 2
        if _binomial_tail(a + b - 1, a, middle) < q:
            low = middle
        else:
            high = middle
    return high


def _binomial_tail(n: int, k: int, p: float) -> float:
    """``P(Binomial(n, p) >= k)``, summed in log space over the shorter side (``n`` may be a pixel count)."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    upper = n - k + 1 <= k
    first, last = (k, n) if upper else (0, k - 1)
    j = np.arange(first, last + 1, dtype=np.float64)
    log_choose = math.lgamma(n + 1) - math.lgamma(first + 1) - math.lgamma(n - first + 1)
    log_choose += np.concatenate([[0.0], np.cumsum(np.log((n - j[:-1]) / (j[:-1] + 1)))])
    mass = float(np.exp(log_choose + j * math.log(p) + (n - j) * math.log1p(-p)).sum())
    return min(1.0, mass) if upper else max(0.0, 1.0 - mass)


def _finite_scores(values: np.ndarray, name: str) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64).ravel()
    if scores.size == 0:
        raise CalibrationError(f"no {name} scores to calibrate from")
    if not np.isfinite(scores).all():
        raise CalibrationError(f"{int((~np.isfinite(scores)).sum())} of the {name} scores are not finite")
    return scores


def _check_rate(value: float, name: str) -> None:
    if not 0.0 < value < 1.0:
        raise CalibrationError(f"{name} must lie strictly between 0 and 1, got {value}")
