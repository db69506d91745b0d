"""How calibration turns scored images into thresholds: checked against scikit-learn and exact order statistics."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from services.decisions.calibration import CalibrationInputError, LabelledImages, decide, frame_size

ROI = (8, 4, 16, 16)  # x, y, w, h in a 40 x 30 frame; maps are 8 x 8, so one map pixel is a 2 x 2 frame block


def best_f1_threshold(negatives: np.ndarray, positives: np.ndarray) -> float:
    labels = np.r_[np.zeros(negatives.size), np.ones(positives.size)]
    precision, recall, thresholds = precision_recall_curve(labels, np.r_[negatives, positives])
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def test_pixel_f1_max_uses_masks_cropped_to_the_roi_and_squashed_to_the_map() -> None:
    rng = np.random.default_rng(0)
    good_maps = rng.uniform(0.0, 0.6, (6, 8, 8))
    bad_maps = rng.uniform(0.0, 0.6, (3, 8, 8))
    map_masks = np.zeros((3, 8, 8), bool)
    map_masks[0, 1:3, 2:5] = map_masks[1, 5:8, 0:2] = map_masks[2, 3:5, 3:5] = True
    bad_maps[map_masks] += rng.uniform(0.2, 0.6, map_masks.sum())
    frame_masks = np.zeros((3, 30, 40), bool)  # each map pixel's 2 x 2 block, placed at the ROI; outside: noise
    frame_masks[:, ROI[1] : ROI[1] + 16, ROI[0] : ROI[0] + 16] = map_masks.repeat(2, axis=1).repeat(2, axis=2)
    frame_masks[:, 25:, :5] = True  # outside the ROI: never seen by the model, must not count
    good_scores, bad_scores = rng.uniform(0.1, 0.5, 6), rng.uniform(0.4, 0.9, 3)

    image, pixel, summary = decide(good_scores, good_maps, bad_scores=bad_scores, bad_maps=bad_maps,
                                   bad_masks=list(frame_masks), roi=ROI)  # fmt: skip
    negatives = np.r_[good_maps.ravel(), bad_maps[~map_masks]]
    assert pixel.rule == "f1_max" and pixel.n_bad == map_masks.sum() and pixel.n_good == negatives.size
    assert pixel.threshold == best_f1_threshold(negatives, bad_maps[map_masks])
    assert image.rule == "f1_max" and image.threshold == best_f1_threshold(good_scores, bad_scores)
    assert summary["bad_scores"]["n"] == 3 and "drift_reference" not in summary  # fewer goods than drift bins


def test_without_masks_the_pixel_threshold_is_the_order_statistic_of_good_map_maxima() -> None:
    rng = np.random.default_rng(1)
    good_maps = rng.uniform(0.0, 1.0, (50, 8, 8))
    scores = rng.uniform(0.0, 1.0, 50)
    image, pixel, summary = decide(scores, good_maps, false_reject=0.1)
    maxima = np.sort(good_maps.reshape(50, -1).max(axis=1))
    assert pixel.threshold == maxima[45]  # rank ceil(51 * 0.9) = 46
    assert image.threshold == np.sort(scores)[45]
    assert len(summary["drift_reference"]["fractions"]) == 10


def test_frames_must_share_one_size_that_holds_the_roi() -> None:
    square = np.zeros((30, 40, 3), np.uint8)
    goods = LabelledImages("goods", ("a.png", "b.png"), (square, square))
    assert frame_size([goods], ROI) == (40, 30)
    other = LabelledImages("bads", ("c.png",), (np.zeros((31, 40, 3), np.uint8),))
    with pytest.raises(CalibrationInputError, match=r"40x30 \(goods/a.png\), 40x31 \(bads/c.png\)"):
        frame_size([goods, other], ROI)
    with pytest.raises(CalibrationInputError, match=r"roi \[30, 4, 16, 16\] does not fit its 40x30 frames"):
        frame_size([goods], (30, 4, 16, 16))
