"""The image-score histogram's buckets follow the configured methods' score ranges (docs/methods.md)."""

from __future__ import annotations

import bisect

from services.config import ZsadConfig
from services.frame_path.metrics import SCORE_BOUNDARIES, PipelineMetrics


def _config(*cameras: dict) -> ZsadConfig:
    return ZsadConfig(cameras={f"cam{i}": {"class_name": "x", "threshold": 0.5, **c} for i, c in enumerate(cameras)})


def test_probability_methods_keep_twenty_buckets_over_zero_to_one() -> None:
    metrics = PipelineMetrics(_config({"method": "winclip"}, {"method": "vcp-clip"}))
    assert metrics.score_boundaries == SCORE_BOUNDARIES
    assert PipelineMetrics().score_boundaries == SCORE_BOUNDARIES


def test_a_clip_ad_camera_gets_buckets_up_to_its_range_end() -> None:
    boundaries = PipelineMetrics(_config({"method": "clip-ad"}, {"method": "anoclip"})).score_boundaries
    assert boundaries == sorted(set(boundaries)) and all(b > 0 for b in boundaries)  # Ray takes positive ones only
    assert set(SCORE_BOUNDARIES) <= set(boundaries)  # the anoclip camera keeps its resolution
    assert boundaries[-1] == 4.75  # clip-ad: [-4, 5], twenty buckets over its positive part
    # a CLIP-AD score of 3.1 lands in a finite bucket, not in +Inf with every score above 1 as before
    assert bisect.bisect_left(boundaries, 3.1) < len(boundaries)


def test_clip_ad_with_more_taps_widens_the_buckets() -> None:
    boundaries = PipelineMetrics(_config({"method": "clip-ad+", "options": {"taps": [2, 4, 6, 8, 10, 12]}}))
    assert boundaries.score_boundaries[-1] == 12.35  # [-6, 13]: 20 steps of 0.65 from 0
