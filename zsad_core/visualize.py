"""Heat-map overlays of anomaly maps on images, and the choice of which cases are worth looking at.

Why: a metric says *how often* a method fails, an overlay says *why* (background texture lighting up, a
defect found but under-segmented, a threshold in the wrong place). ``zsad eval --save-overlays DIR`` writes
the few most instructive cases per class, picked by :func:`select_extremes`, rather than thousands of files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from zsad_core.imageio import encode_png

WHITE = (255, 255, 255)


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise TypeError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grey, got {image.shape}")
    return image


def overlay(
    image_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    threshold: float | None = None,
    alpha: float = 0.5,
    vmin: float | None = None,
    vmax: float | None = None,
    *,
    contour_color: tuple[int, int, int] = WHITE,
    contour_thickness: int | None = None,
) -> np.ndarray:
    """Blend a JET heat map of ``anomaly_map`` on ``image_rgb``, optionally outlining ``map >= threshold``.

    The map is bilinearly resized to the image when the sizes differ (maps are often at the model's S x S).
    Colours span ``[vmin, vmax]``; pass fixed values (e.g. 0 and 1, or a class's score range) to compare
    images, since the per-image default stretches even a flat, all-normal map to full red-to-blue. White
    contours stay readable on JET, which contains no white.

    Args:
        image_rgb: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey) image.
        anomaly_map: ``(h, w)`` finite float map, higher = more anomalous.
        threshold: if given, contours of ``map >= threshold`` (in map units) are drawn.
        alpha: weight of the heat map in the blend, in [0, 1].
        vmin: map value drawn as blue; default the map's minimum.
        vmax: map value drawn as red; default the map's maximum.
        contour_color: RGB colour of the contours.
        contour_thickness: contour width in pixels; default about 1/200 of the shorter image side, >= 1.

    Returns:
        ``(H, W, 3)`` uint8 RGB overlay; the input is not modified.
    """
    image = _as_rgb_uint8(image_rgb)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    values = np.asarray(anomaly_map, dtype=np.float32)
    if values.ndim != 2:
        raise ValueError(f"anomaly_map must be (h, w), got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("anomaly_map contains NaN or infinite values")
    height, width = image.shape[:2]
    if values.shape != (height, width):
        values = cv2.resize(values, (width, height), interpolation=cv2.INTER_LINEAR)
    low = float(values.min()) if vmin is None else float(vmin)
    high = float(values.max()) if vmax is None else float(vmax)
    scaled = np.clip((values - low) / (high - low), 0.0, 1.0) if high > low else np.zeros_like(values)
    heat_bgr = cv2.applyColorMap(np.rint(scaled * 255.0).astype(np.uint8), cv2.COLORMAP_JET)
    heat = cv2.cvtColor(heat_bgr, cv2.COLOR_BGR2RGB)
    blended = (1.0 - alpha) * image.astype(np.float32) + alpha * heat.astype(np.float32)
    result = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    if threshold is not None:
        binary = (values >= threshold).astype(np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        thickness = contour_thickness or max(1, round(min(height, width) / 200))
        cv2.drawContours(result, contours, -1, tuple(int(c) for c in contour_color), thickness)
    return result


def save_overlay(path: str | os.PathLike, image_rgb: np.ndarray, anomaly_map: np.ndarray, **kwargs: Any) -> str:
    """Write :func:`overlay` of ``image_rgb`` and ``anomaly_map`` as a PNG, creating parent folders.

    Args:
        path: output file; must end in ``.png`` (lossless, so thin contours survive).
        image_rgb: see :func:`overlay`.
        anomaly_map: see :func:`overlay`.
        **kwargs: passed to :func:`overlay` (``threshold``, ``alpha``, ``vmin``, ``vmax``, ...).

    Returns:
        ``path``.
    """
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"overlays are written as PNG; {path!r} does not end in .png")
    data = encode_png(overlay(image_rgb, anomaly_map, **kwargs))
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


@dataclass(frozen=True, eq=False)
class Extremes:
    """Indices of the most and least convincing cases of a scored set, each ``(n,)`` int64.

    Attributes:
        false_alarms: normal samples with the highest scores, highest first.
        misses: anomalous samples with the lowest scores, lowest first.
        clear_anomalies: anomalous samples with the highest scores, highest first.
        clear_normals: normal samples with the lowest scores, lowest first.
    """

    false_alarms: np.ndarray
    misses: np.ndarray
    clear_anomalies: np.ndarray
    clear_normals: np.ndarray

    @property
    def worst(self) -> np.ndarray:
        """False alarms then misses: the cases a user should inspect first."""
        return np.concatenate([self.false_alarms, self.misses])

    @property
    def best(self) -> np.ndarray:
        """Clear anomalies then clear normals: what the method gets right, for contrast."""
        return np.concatenate([self.clear_anomalies, self.clear_normals])


def _ranked(indices: np.ndarray, scores: np.ndarray, descending: bool) -> np.ndarray:
    keys = -scores[indices] if descending else scores[indices]
    return indices[np.lexsort((indices, keys))]  # ties keep dataset order, so the choice is reproducible


def select_extremes(scores: np.ndarray, labels: np.ndarray, k: int) -> Extremes:
    """Pick up to ``k`` cases of each kind: false alarms, misses, clear anomalies, clear normals.

    Within one label the worst and best picks never overlap: the best come from what is left after the
    worst ``k`` are taken, so a small class yields fewer, distinct files.

    Args:
        scores: ``(N,)`` image anomaly scores.
        labels: ``(N,)`` 0 (normal) / 1 (anomalous).
        k: cases per kind, >= 0.

    Returns:
        The :class:`Extremes`.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or scores.shape != labels.shape:
        raise ValueError(f"scores and labels must be (N,) of equal length, got {scores.shape} and {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    normals = _ranked(np.flatnonzero(labels == 0), scores, descending=True)
    anomalies = _ranked(np.flatnonzero(labels == 1), scores, descending=False)
    return Extremes(
        false_alarms=normals[:k],
        misses=anomalies[:k],
        clear_anomalies=anomalies[k:][::-1][:k],
        clear_normals=normals[k:][::-1][:k],
    )
