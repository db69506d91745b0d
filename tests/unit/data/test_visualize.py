"""Overlays (shape, colours, contours, determinism, PNG output) and the choice of extreme cases."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zsad_core.preprocess import read_image
from zsad_core.visualize import overlay, save_overlay, select_extremes

WHITE = np.array([255, 255, 255], np.uint8)


def square_map(size: int = 32) -> np.ndarray:
    anomaly_map = np.zeros((size, size), np.float32)
    anomaly_map[8:20, 10:24] = 1.0
    return anomaly_map


def test_overlay_shape_dtype_and_resizing():
    image = np.random.default_rng(0).integers(0, 256, size=(48, 64, 3), dtype=np.uint8)
    before = image.copy()
    out = overlay(image, square_map(16))  # map smaller than image: resized
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(image, before)
    assert overlay(image[..., 0], square_map(16)).shape == (48, 64, 3)  # grey image accepted


def test_overlay_colours_follow_the_jet_map_and_alpha():
    image = np.full((32, 32, 3), 77, np.uint8)
    np.testing.assert_array_equal(overlay(image, square_map(), alpha=0.0), image)
    heat = overlay(image, square_map(), alpha=1.0)
    jet = cv2.cvtColor(cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)[0]
    np.testing.assert_array_equal(heat[0, 0], jet[0])  # minimum: blue
    np.testing.assert_array_equal(heat[10, 12], jet[1])  # maximum: red
    assert heat[10, 12].argmax() == 0 and heat[0, 0].argmax() == 2  # RGB order: red high, blue low
    # Fixed vmin/vmax: a map of 0.5 everywhere is mid-scale (green-ish), not stretched to blue.
    flat = overlay(image, np.full((32, 32), 0.5, np.float32), alpha=1.0, vmin=0.0, vmax=1.0)
    assert flat[0, 0, 1] > 200
    constant = overlay(image, np.full((32, 32), 3.0, np.float32), alpha=1.0)  # no range: all minimum colour
    np.testing.assert_array_equal(constant[5, 5], jet[0])


def test_overlay_draws_contours_only_when_a_threshold_is_given():
    image = np.zeros((32, 32, 3), np.uint8)
    plain = overlay(image, square_map())
    assert not (plain == WHITE).all(axis=2).any()  # a half-blend on black never reaches white
    outlined = overlay(image, square_map(), threshold=0.5)
    white = (outlined == WHITE).all(axis=2)
    assert white.any()
    rows, cols = np.nonzero(white)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (8, 19, 10, 23)  # the boundary of the square
    assert not white[12:16, 14:20].any()  # interior untouched
    assert not (overlay(image, square_map(), threshold=2.0) == WHITE).all(axis=2).any()


def test_overlay_is_deterministic_and_validates_input():
    image = np.random.default_rng(1).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    anomaly_map = np.random.default_rng(2).random((10, 15)).astype(np.float32)
    np.testing.assert_array_equal(
        overlay(image, anomaly_map, threshold=0.7), overlay(image.copy(), anomaly_map.copy(), threshold=0.7)
    )
    with pytest.raises(ValueError, match="NaN"):
        overlay(image, np.full((10, 15), np.nan))
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, anomaly_map, alpha=1.5)
    with pytest.raises(TypeError, match="uint8"):
        overlay(image.astype(np.float32), anomaly_map)


def test_save_overlay_writes_the_overlay_as_png(tmp_path):
    image = np.random.default_rng(3).integers(0, 256, size=(20, 30, 3), dtype=np.uint8)
    path = save_overlay(str(tmp_path / "deep" / "dir" / "x.png"), image, square_map(), threshold=0.5)
    np.testing.assert_array_equal(read_image(path), overlay(image, square_map(), threshold=0.5))
    with pytest.raises(ValueError, match="PNG"):
        save_overlay(str(tmp_path / "x.jpg"), image, square_map())


def test_select_extremes_picks_false_alarms_misses_and_clear_cases():
    scores = np.array([0.9, 0.1, 0.5, 0.8, 0.2, 0.3, 0.95, 0.15])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    picked = select_extremes(scores, labels, k=2)
    assert picked.false_alarms.tolist() == [0, 2]  # highest-scored normals
    assert picked.misses.tolist() == [4, 5]  # lowest-scored anomalies
    assert picked.clear_anomalies.tolist() == [6, 3]
    assert picked.clear_normals.tolist() == [1, 7]
    assert picked.worst.tolist() == [0, 2, 4, 5] and picked.best.tolist() == [6, 3, 1, 7]


def test_select_extremes_never_repeats_a_case_and_checks_input():
    picked = select_extremes(np.array([0.3, 0.3, 0.7]), np.array([0, 0, 1]), k=5)
    assert picked.false_alarms.tolist() == [0, 1]  # ties keep dataset order
    assert picked.clear_normals.size == 0 and picked.clear_anomalies.size == 0
    assert picked.misses.tolist() == [2]
    assert select_extremes(np.array([0.1]), np.array([1]), k=0).worst.size == 0
    with pytest.raises(ValueError, match="equal length"):
        select_extremes(np.zeros(3), np.zeros(2), 1)
    with pytest.raises(ValueError, match="0 or 1"):
        select_extremes(np.zeros(2), np.array([0, 2]), 1)
    with pytest.raises(ValueError, match="NaN"):
        select_extremes(np.array([np.nan]), np.array([0]), 1)
