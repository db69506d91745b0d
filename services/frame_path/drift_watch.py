"""A camera's rolling score window compared with its calibration set, with drift episodes for alerting.

Why episodes: the PSI of a window is recomputed after every batch, so a camera that has drifted stays drifted for
thousands of frames. The gauge follows every value, but an operator-visible audit entry is written once when a
window first crosses the level and again only after the camera has come back below it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from zsad_core.decisions.drift import MIN_WINDOW, PSI_DRIFTED, DriftReference, DriftResult

WINDOW = 200  # scores per rolling window: twice the smallest window drift.py will flag


@dataclass(frozen=True)
class DriftObservation:
    """The latest comparison and whether it opened a drift episode (the first drifted window in a row)."""

    result: DriftResult
    episode_started: bool


class DriftWatch:
    """The last ``window`` image scores of one camera against one calibration reference.

    Args:
        reference: the calibration set's bins.
        calibration: the calibration version the reference came from (named in audit entries).
        window: scores kept.
    """

    def __init__(self, reference: DriftReference, calibration: str, *, window: int = WINDOW) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"a drift window of {window} scores can never be flagged (minimum {MIN_WINDOW})")
        self.reference = reference
        self.calibration = calibration
        self.scores: deque[float] = deque(maxlen=window)
        self.drifted = False

    def observe(self, scores: Iterable[float]) -> DriftObservation | None:
        """Add ``scores`` and compare the window; ``None`` until the window holds :data:`MIN_WINDOW` scores."""
        self.scores.extend(scores)
        if len(self.scores) < MIN_WINDOW:
            return None
        result = self.reference.compare(list(self.scores), threshold=PSI_DRIFTED, min_window=MIN_WINDOW)
        started = result.drifted and not self.drifted
        self.drifted = result.drifted
        return DriftObservation(result, started)

