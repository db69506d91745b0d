"""From scores to decisions: thresholds calibrated on known-good images, defect regions, score drift.

Pure numpy/OpenCV, like the rest of :mod:`zsad_core`: the calibration command, the serving replicas and
offline evaluation all apply the same rules.
"""

from zsad_core.decisions.drift import DriftReference, DriftResult
from zsad_core.decisions.regions import MapPlacement, Region, decode_regions, encode_regions, extract_regions
from zsad_core.decisions.thresholds import (
    ThresholdChoice,
    f1_max_threshold,
    false_reject_threshold,
    false_reject_upper_bound,
)

__all__ = [
    "DriftReference",
    "DriftResult",
    "MapPlacement",
    "Region",
    "ThresholdChoice",
    "decode_regions",
    "encode_regions",
    "extract_regions",
    "f1_max_threshold",
    "false_reject_threshold",
    "false_reject_upper_bound",
]
