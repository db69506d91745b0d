"""Thresholds against scipy's Beta quantiles, scikit-learn's precision-recall curve and exact counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import precision_recall_curve

from zsad_core.decisions.thresholds import (
    CalibrationError,
    beta_quantile,
    f1_max_threshold,
    false_reject_threshold,
    goods_needed,
)


@pytest.mark.parametrize(("a", "b"), [(1, 1), (2, 199), (1, 200), (5, 3), (50, 5000), (1000, 200_000)])
@pytest.mark.parametrize("q", [0.05, 0.5, 0.95, 0.99])
def test_beta_quantile_matches_scipy(a: int, b: int, q: float) -> None:
    assert beta_quantile(a, b, q) == pytest.approx(stats.beta.ppf(q, a, b), rel=1e-9, abs=1e-12)


def test_false_reject_threshold_is_the_conformal_order_statistic() -> None:
    scores = np.random.default_rng(3).normal(size=200)
    choice = false_reject_threshold(scores, 0.01, 0.95)
    assert choice.threshold == np.sort(scores)[198]  # rank ceil(201 * 0.99) = 199
    assert choice.expected_false_reject == pytest.approx(2 / 201)
    assert choice.false_reject_bound == pytest.approx(stats.beta.ppf(0.95, 2, 199), rel=1e-9)
    assert choice.set_false_reject == 2 / 200  # the 199th and 200th score are at or above it
    assert (choice.n_good, choice.n_bad, choice.rule) == (200, 0, "false_reject")


def test_too_few_goods_take_the_highest_score_and_say_so() -> None:
    scores = np.arange(20, dtype=float)
    choice = false_reject_threshold(scores, 0.01)
    assert choice.threshold == 19.0
    assert choice.expected_false_reject == pytest.approx(1 / 21) and choice.expected_false_reject > 0.01


def test_goods_needed_is_the_smallest_count_whose_top_score_reaches_the_confidence() -> None:
    n = goods_needed(0.01, 0.95)
    assert n == 299
    assert 0.99**n <= 0.05 < 0.99 ** (n - 1)


def test_f1_max_threshold_matches_scikit_learn() -> None:
    rng = np.random.default_rng(5)
    goods, bads = rng.normal(0.0, 1.0, 300), rng.normal(1.5, 1.0, 40)
    choice = f1_max_threshold(goods, bads)
    precision, recall, thresholds = precision_recall_curve(np.r_[np.zeros(300), np.ones(40)], np.r_[goods, bads])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best = int(np.argmax(f1[:-1]))
    assert choice.f1 == pytest.approx(f1[best])
    assert choice.threshold == thresholds[best]
    assert choice.set_false_reject == np.mean(goods >= choice.threshold)
    assert choice.set_miss_rate == np.mean(bads < choice.threshold)
    rejected = int((goods >= choice.threshold).sum())
    assert choice.false_reject_bound == pytest.approx(stats.beta.ppf(0.95, rejected + 1, 300 - rejected))


@pytest.mark.parametrize(
    ("scores", "target", "match"),
    [
        ([], 0.01, "no good scores"),
        ([0.1, np.nan], 0.01, "not finite"),
        ([0.1, 0.2], 0.0, "strictly between 0 and 1"),
        ([0.1, 0.2], 1.0, "strictly between 0 and 1"),
    ],
)
def test_bad_calibration_input_is_refused(scores: list[float], target: float, match: str) -> None:
    with pytest.raises(CalibrationError, match=match) as caught:
        false_reject_threshold(np.asarray(scores), target)
    assert caught.value.reason == "bad_calibration"
