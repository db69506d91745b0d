"""Regions against scipy.ndimage.label and a brute-force placement of map pixels on the frame."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from zsad_core.decisions.regions import (
    MapPlacement,
    RegionError,
    decode_regions,
    encode_regions,
    extract_regions,
)

HAND_MADE = np.array(
    [
        [0.9, 0.8, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.7, 0.0, 0.0, 0.0, 0.0, 0.6, 0.6, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.6, 0.95, 0.0],
        [0.0, 0.0, 0.0, 0.7, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0],  # diagonal to (3, 3): one region with 8-connectivity
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.55],
        [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    ]
)


def reference_regions(scores: np.ndarray, threshold: float, frame: tuple[int, int], roi: tuple[int, int, int, int]):
    """(x, y, w, h, area, max, mean) per component: scipy labels, and each frame pixel that overlaps a map pixel
    of the component (continuous rectangles, tested pixel by pixel) counted into the box."""
    labels, count = ndimage.label(scores >= threshold, structure=np.ones((3, 3)))
    map_h, map_w = scores.shape
    rx, ry, rw, rh = roi
    cell_w, cell_h = rw / map_w, rh / map_h
    rows = []
    for label in range(1, count + 1):
        inside = labels == label
        covered = np.zeros((frame[1], frame[0]), bool)
        for i, j in zip(*np.nonzero(inside), strict=True):
            x0, x1 = rx + j * cell_w, rx + (j + 1) * cell_w
            y0, y1 = ry + i * cell_h, ry + (i + 1) * cell_h
            px = np.arange(frame[0])
            py = np.arange(frame[1])
            covered |= np.outer((py + 1 > y0) & (py < y1), (px + 1 > x0) & (px < x1))
        ys, xs = np.nonzero(covered)
        area = round(inside.sum() * cell_w * cell_h)
        rows.append((xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1, area,
                     ndimage.maximum(scores, labels, label), ndimage.mean(scores, labels, label)))  # fmt: skip
    return sorted(rows, key=lambda row: -row[5])


@pytest.mark.parametrize(
    ("frame", "roi"),
    [((8, 8), None), ((100, 60), (10, 5, 40, 32)), ((97, 71), (3, 7, 30, 45)), ((1920, 1080), (0, 0, 1920, 1080))],
)
def test_regions_match_scipy_and_brute_force_placement(frame, roi) -> None:
    placement = MapPlacement.for_frame(*frame, roi)
    full_roi = roi or (0, 0, *frame)
    regions = extract_regions(HAND_MADE, 0.5, placement)
    expected = reference_regions(HAND_MADE, 0.5, frame, full_roi)
    assert len(regions) == len(expected) == 4
    for region, (x, y, w, h, area, top, mean) in zip(regions, expected, strict=True):
        assert (region.x, region.y, region.width, region.height, region.area) == (x, y, w, h, area)
        assert region.max_score == pytest.approx(top) and region.mean_score == pytest.approx(mean)


def test_min_area_filters_in_frame_pixels() -> None:
    placement = MapPlacement.for_frame(100, 60, (10, 5, 40, 32))  # one map pixel is 5 x 4 = 20 frame pixels
    areas = sorted(region.area for region in extract_regions(HAND_MADE, 0.5, placement))
    assert areas == [20, 40, 60, 80]
    kept = extract_regions(HAND_MADE, 0.5, placement, min_area=41)
    assert sorted(region.area for region in kept) == [60, 80]
    assert extract_regions(HAND_MADE, 0.99, placement) == []


def test_encoding_is_compact_and_round_trips() -> None:
    regions = extract_regions(HAND_MADE, 0.5, MapPlacement.for_frame(100, 60, (10, 5, 40, 32)))
    text = encode_regions(regions)
    assert " " not in text and text.startswith("[[35,9,10,8,80,0.95,0.6875],[10,5,10,8,60,0.9,0.8],")
    decoded = decode_regions(text)
    assert [(r.x, r.y, r.width, r.height, r.area) for r in decoded] == [
        (r.x, r.y, r.width, r.height, r.area) for r in regions
    ]
    assert [r.max_score for r in decoded] == [round(r.max_score, 4) for r in regions]
    assert decode_regions("[]") == []


@pytest.mark.parametrize(
    "text", ["{", '{"x": 1}', "[[1, 2, 3]]", '[[1, 2, 3, 4, 5, 0.5, "a"]]', "[[-1,0,1,1,1,0.5,0.5]]"]
)
def test_bad_encodings_are_refused(text: str) -> None:
    with pytest.raises(RegionError):
        decode_regions(text)


def test_bad_maps_and_placements_are_refused() -> None:
    with pytest.raises(RegionError, match="does not fit"):
        MapPlacement.for_frame(100, 60, (70, 0, 40, 10))
    with pytest.raises(RegionError, match="2-D"):
        extract_regions(np.zeros(5), 0.5, MapPlacement.for_frame(5, 1))
    with pytest.raises(RegionError, match="non-finite"):
        extract_regions(np.full((2, 2), np.nan), 0.5, MapPlacement.for_frame(2, 2))
