"""Evaluation metrics of zero-shot anomaly detection: pixel and image AUROC / AP / F1-max, and AUPRO.

``evaluate`` runs the papers' protocol (per class, then the macro mean) and ranks each class's pixels once
for all pixel metrics; the single-metric functions are for one-off use.
"""

from zsad_core.metrics.curves import (
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
)
from zsad_core.metrics.evaluate import METRIC_KEYS, EvaluationReport, evaluate
from zsad_core.metrics.pro import aupro
from zsad_core.metrics.ranking import BinaryRanking, rank_binary

__all__ = [
    "METRIC_KEYS",
    "BinaryRanking",
    "EvaluationReport",
    "aupro",
    "evaluate",
    "image_ap",
    "image_auroc",
    "image_f1_max",
    "pixel_ap",
    "pixel_auroc",
    "pixel_f1_max",
    "rank_binary",
]
