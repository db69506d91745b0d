"""A camera's drift window: silent until full enough, one episode per crossing, and a new one after recovery."""

from __future__ import annotations

import numpy as np
import pytest

from services.frame_path.drift_watch import DriftWatch
from services.stores.camera_settings import drift_reference
from zsad_core.decisions import DriftReference
from zsad_core.decisions.drift import MIN_WINDOW


def _reference() -> DriftReference:
    return DriftReference.from_scores(np.linspace(0.0, 1.0, 1001))  # deciles at 0.1, 0.2, ..., 0.9


def test_episodes_start_once_and_again_after_recovery() -> None:
    watch = DriftWatch(_reference(), "c3", window=MIN_WINDOW)
    assert watch.observe(np.full(MIN_WINDOW - 1, 0.95)) is None  # too few scores to judge
    started = watch.observe([0.95])
    # All scores in the top bin, the empty ones counted as 1e-4: the PSI sum written out bin by bin.
    actual = [1e-4] * 9 + [1.0]
    expected = sum((a - e) * np.log(a / e) for a, e in zip(actual, _reference().fractions, strict=True))
    assert started.result.statistic == pytest.approx(expected) and started.episode_started
    assert not watch.observe([0.95]).episode_started  # still drifted: the same episode
    recovered = watch.observe((np.arange(MIN_WINDOW) + 0.5) / MIN_WINDOW)  # the window is uniform again
    near_zero = sum((0.1 - e) * np.log(0.1 / e) for e in _reference().fractions)  # 100 or 101 of 1001 per bin
    assert recovered.result.statistic == pytest.approx(near_zero) and not recovered.result.drifted
    assert watch.observe(np.full(MIN_WINDOW, 0.95)).episode_started  # a new episode


def test_a_window_too_small_to_flag_is_refused_and_evidence_without_bins_gives_none() -> None:
    with pytest.raises(ValueError, match="never be flagged"):
        DriftWatch(_reference(), "c1", window=MIN_WINDOW - 1)
    assert drift_reference({"image": {}}) is None
    assert drift_reference({"drift_reference": _reference().to_dict()}) == _reference()
