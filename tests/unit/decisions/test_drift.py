"""The PSI against a hand-written loop over np.percentile bins, and the drifted flag's window rule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zsad_core.decisions.drift import DriftReference
from zsad_core.decisions.thresholds import CalibrationError


def psi_by_hand(reference: np.ndarray, window: np.ndarray, bins: int = 10) -> float:
    edges = [np.percentile(reference, 100 * j / bins) for j in range(1, bins)]
    total = 0.0
    for low, high in zip([-math.inf, *edges], [*edges, math.inf], strict=True):
        expected = max(np.mean((reference >= low) & (reference < high)), 1e-4)
        actual = max(np.mean((window >= low) & (window < high)), 1e-4)
        total += (actual - expected) * math.log(actual / expected)
    return total


@pytest.fixture
def calibration() -> np.ndarray:
    return np.random.default_rng(0).normal(0.3, 0.05, 200)


def test_psi_matches_the_definition(calibration: np.ndarray) -> None:
    reference = DriftReference.from_scores(calibration)
    assert reference.fractions == pytest.approx([0.1] * 10)
    for shift in (0.0, 0.02, 0.1):
        window = np.random.default_rng(1).normal(0.3 + shift, 0.05, 300)
        assert reference.compare(window).statistic == pytest.approx(psi_by_hand(calibration, window), rel=1e-12)


def test_same_distribution_is_stable_and_a_shift_drifts(calibration: np.ndarray) -> None:
    reference = DriftReference.from_scores(calibration)
    stable = reference.compare(np.random.default_rng(2).normal(0.3, 0.05, 200))
    assert not stable.drifted and stable.statistic < 0.25 and stable.window == 200
    shifted = reference.compare(np.random.default_rng(2).normal(0.35, 0.05, 200))  # one standard deviation
    assert shifted.drifted and shifted.statistic >= 0.25
    short = reference.compare(np.random.default_rng(2).normal(0.35, 0.05, 99))
    assert short.statistic >= 0.25 and not short.drifted  # fewer than MIN_WINDOW scores never flag


def test_reference_round_trips_and_rejects_bad_input(calibration: np.ndarray) -> None:
    reference = DriftReference.from_scores(calibration)
    assert DriftReference.from_dict(reference.to_dict()) == reference
    with pytest.raises(CalibrationError, match="at least 10 calibration scores"):
        DriftReference.from_scores(calibration[:9])
    with pytest.raises(CalibrationError, match="finite"):
        reference.compare(np.array([0.1, np.inf]))
    with pytest.raises(CalibrationError, match="one more fraction"):
        DriftReference.from_dict({"edges": [0.1, 0.2], "fractions": [0.5, 0.5]})
