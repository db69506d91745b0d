"""The promise of a calibration, measured: held-out goods are rejected at no more than the stated bound.

Random CLIP weights are enough: the order-statistic bound holds for any score distribution, so the test checks
the rule and the scorer's plumbing, not the detector.
"""

from __future__ import annotations

import numpy as np
import pytest

from services.config import ZsadConfig
from services.decisions.calibration import CameraScorer, decide
from zsad_core.data.synthetic import SyntheticDataset

CALIBRATION_GOODS = 200
HELD_OUT_GOODS = 2000


@pytest.mark.slow
def test_held_out_false_reject_rate_stays_within_the_bound() -> None:
    config = ZsadConfig(
        cameras={"cam1": {"method": "anoclip", "class_name": "object", "threshold": 0.5, "image_size": 64,
                          "options": {"image_views": "none"}}},
        serving={"backbone": "zsad-tiny-vit", "pretrained": False, "max_batch_size": 100},
    )  # fmt: skip
    goods = SyntheticDataset(seed=7, classes=1, per_class=CALIBRATION_GOODS + HELD_OUT_GOODS, size=64, anomaly_ratio=0)
    frames = [goods[i].image for i in range(len(goods))]
    scores, maps = CameraScorer(config, "cam1", roi=(4, 4, 56, 56)).score(frames)
    image, pixel, summary = decide(scores[:CALIBRATION_GOODS], maps[:CALIBRATION_GOODS], false_reject=0.01)

    held_out = scores[CALIBRATION_GOODS:]
    measured = float(np.mean(held_out >= image.threshold))
    held_out_maxima = maps[CALIBRATION_GOODS:].reshape(HELD_OUT_GOODS, -1).max(axis=1)
    measured_pixel = float(np.mean(held_out_maxima >= pixel.threshold))
    print(
        f"target 0.01, expected {image.expected_false_reject:.4f}, 95% bound {image.false_reject_bound:.4f}, "
        f"measured {measured:.4f} on {HELD_OUT_GOODS}; regions on goods: bound {pixel.false_reject_bound:.4f}, "
        f"measured {measured_pixel:.4f}"
    )
    assert image.threshold == np.sort(scores[:CALIBRATION_GOODS])[198]
    assert image.expected_false_reject == pytest.approx(2 / 201)
    assert measured <= image.false_reject_bound
    assert measured_pixel <= pixel.false_reject_bound
    assert summary["good_scores"]["n"] == CALIBRATION_GOODS and summary["goods_needed_for_target"] == 299
