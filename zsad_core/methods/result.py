"""The one output type of every method."""

from __future__ import annotations

from typing import NamedTuple

import torch


class AnomalyResult(NamedTuple):
    """What ``predict`` returns for a batch.

    Attributes:
        maps: ``(B, H, W)`` float32 anomaly maps at the model input size; higher means more anomalous.
        scores: ``(B,)`` float32 image anomaly scores, computable from each image alone (no test-set statistics).
    """

    maps: torch.Tensor
    scores: torch.Tensor
