"""Defect regions: the connected parts of an anomaly map above the pixel threshold, in frame coordinates.

Why regions and not the map: an operator (or a reject mechanism) needs "where and how large", and a list of a
few boxes fits in a result hash and an event, where a map needs a separate key. Components are labelled on the
map itself (model resolution, e.g. 224 x 224) with 8-connectivity, which costs a fraction of labelling a
full-resolution frame; boxes and areas are then scaled to the frame. The map covers the camera's ROI squashed to
a square (the papers' resize), so each map pixel stands for a ``width / map_width`` by ``height / map_height``
rectangle of the frame: a box spans the whole rectangles of its first and last pixels (exact integer arithmetic)
and a region's area is its pixel count times that rectangle's area, rounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import cv2
import numpy as np

from zsad_core.errors import ZsadError

SCORE_DIGITS = 4  # scores in the JSON encoding: maps are stored at 16 bits, finer digits would be noise


class RegionError(ZsadError, ValueError):
    """A map, placement or encoded region list that cannot be used (wrong shape, outside the frame, bad JSON)."""

    reason = "bad_regions"


@dataclass(frozen=True)
class MapPlacement:
    """The rectangle of the original frame that an anomaly map covers (the ROI, or the whole frame).

    Attributes:
        x, y: its top-left corner in frame pixels.
        width, height: its size in frame pixels.
    """

    x: int
    y: int
    width: int
    height: int

    @classmethod
    def for_frame(
        cls, frame_width: int, frame_height: int, roi: tuple[int, int, int, int] | None = None
    ) -> MapPlacement:
        """The placement of a map computed on a ``frame_width`` x ``frame_height`` frame cropped to ``roi``.

        Raises:
            RegionError: the ROI reaches past the frame or the frame is empty.
        """
        if frame_width < 1 or frame_height < 1:
            raise RegionError(f"frame size must be positive, got {frame_width}x{frame_height}")
        if roi is None:
            return cls(0, 0, frame_width, frame_height)
        x, y, width, height = roi
        if x < 0 or y < 0 or width < 1 or height < 1 or x + width > frame_width or y + height > frame_height:
            raise RegionError(
                f"roi [x={x}, y={y}, w={width}, h={height}] does not fit a {frame_width}x{frame_height} frame"
            )
        return cls(x, y, width, height)


@dataclass(frozen=True)
class Region:
    """One connected defect region.

    Attributes:
        x, y, width, height: bounding box in original-frame pixels.
        area: frame pixels covered by the region's map pixels.
        max_score, mean_score: of the map over the region.
    """

    x: int
    y: int
    width: int
    height: int
    area: int
    max_score: float
    mean_score: float


def extract_regions(
    anomaly_map: np.ndarray, pixel_threshold: float, placement: MapPlacement, *, min_area: int = 0
) -> list[Region]:
    """The 8-connected components of ``anomaly_map >= pixel_threshold`` whose frame area is at least ``min_area``.

    Returns:
        Regions, highest ``max_score`` first.

    Raises:
        RegionError: the map is not a finite 2-D array.
    """
    scores = np.asarray(anomaly_map, dtype=np.float64)
    if scores.ndim != 2 or scores.size == 0:
        raise RegionError(f"an anomaly map must be a non-empty 2-D array, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise RegionError("the anomaly map has non-finite values")
    map_h, map_w = scores.shape
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        (scores >= pixel_threshold).astype(np.uint8), connectivity=8
    )
    if count <= 1:
        return []
    flat = labels.ravel()
    sums = np.bincount(flat, weights=scores.ravel(), minlength=count)
    maxima = np.full(count, -np.inf)
    np.maximum.at(maxima, flat, scores.ravel())
    cell = placement.width * placement.height
    regions = []
    for label in range(1, count):
        left, top, width, height, pixels = (int(v) for v in stats[label])
        area = round(pixels * cell / (map_w * map_h))
        if area < min_area:
            continue
        x0 = left * placement.width // map_w
        x1 = -(-(left + width) * placement.width // map_w)
        y0 = top * placement.height // map_h
        y1 = -(-(top + height) * placement.height // map_h)
        regions.append(
            Region(
                x=placement.x + x0,
                y=placement.y + y0,
                width=x1 - x0,
                height=y1 - y0,
                area=area,
                max_score=float(maxima[label]),
                mean_score=float(sums[label] / pixels),
            )
        )
    return sorted(regions, key=lambda region: region.max_score, reverse=True)


def encode_regions(regions: list[Region]) -> str:
    """Compact JSON for a result hash or event: ``[[x, y, w, h, area, max, mean], ...]``, scores rounded."""
    rows = [
        [r.x, r.y, r.width, r.height, r.area, round(r.max_score, SCORE_DIGITS), round(r.mean_score, SCORE_DIGITS)]
        for r in regions
    ]
    return json.dumps(rows, separators=(",", ":"))


def decode_regions(text: str | bytes) -> list[Region]:
    """The inverse of :func:`encode_regions` (scores as rounded there).

    Raises:
        RegionError: not JSON, or not a list of seven-number rows.
    """
    try:
        rows = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegionError(f"encoded regions are not JSON: {exc}") from exc
    if not isinstance(rows, list):
        raise RegionError("encoded regions must be a JSON list")
    regions = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 7 and all(_is_number(v) for v in row)):
            raise RegionError(f"an encoded region must be [x, y, w, h, area, max, mean], got {row!r}")
        if not all(float(v).is_integer() and v >= 0 for v in row[:5]):
            raise RegionError(f"box and area of an encoded region must be non-negative integers, got {row!r}")
        x, y, width, height, area, max_score, mean_score = row
        regions.append(Region(int(x), int(y), int(width), int(height), int(area), float(max_score), float(mean_score)))
    return regions


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
