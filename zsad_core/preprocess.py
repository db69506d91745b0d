"""CLIP preprocessing with the resize policies the methods need (decoding guards: :mod:`zsad_core.imageio`).

The resize goes through Pillow's bicubic
filter because that is what open_clip's transform and the papers' evaluation (torchvision ``Resize`` on PIL
images) use: the pixels the model sees are then the same as in the papers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch

from zsad_core.imageio import (  # re-exported: the decoding guards were first published from this module
    DEFAULT_LIMITS,
    ImageLimits,
    Interpolation,
    decode_image,
    encode_jpeg,
    encode_png,
    probe_image,
    read_image,
    resize_rgb,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Geometry",
    "ImageLimits",
    "PreprocessConfig",
    "decode_image",
    "encode_jpeg",
    "encode_png",
    "map_to_original",
    "normalize",
    "preprocess",
    "probe_image",
    "read_image",
    "resize_image",
]

ResizeMode = Literal["squash", "letterbox", "center_crop"]


@dataclass(frozen=True)
class Geometry:
    """Where the model input came from in the original image, so a map can be placed back on it.

    Attributes:
        height, width: original image size.
        top, left, bottom, right: the box, in model-input pixels, that holds image content
            (letterbox padding lies outside it; for squash it is the whole input).
        crop: for ``center_crop``, the box ``(top, left, bottom, right)`` of the original image that was kept.
    """

    height: int
    width: int
    top: int
    left: int
    bottom: int
    right: int
    crop: tuple[int, int, int, int] | None = None


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw images become model input.

    Attributes:
        image_size: side S of the square model input.
        mean, std: normalisation of the backbone's weights (taken from its weight source, never re-typed).
        resize: ``squash`` (S x S regardless of aspect, the papers' protocol), ``letterbox`` (keep the aspect,
            pad with ``fill``) or ``center_crop`` (shorter side to S then crop, open_clip's eval transform).
        interpolation: resampling filter.
        fill: pad value (0-255) for letterbox.
    """

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeMode = "squash"
    interpolation: Interpolation = "bicubic"
    fill: int = 0


def resize_image(image: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, Geometry]:
    """Resize one RGB uint8 image to ``cfg.image_size`` by the configured policy.

    Returns:
        The ``(S, S, 3)`` uint8 image and its :class:`Geometry`.
    """
    size = cfg.image_size
    height, width = image.shape[:2]
    if cfg.resize == "squash":
        return resize_rgb(image, size, size, cfg.interpolation), Geometry(height, width, 0, 0, size, size)
    if cfg.resize == "letterbox":
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.full((size, size, 3), cfg.fill, dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = resize_rgb(image, new_w, new_h, cfg.interpolation)
        return canvas, Geometry(height, width, top, left, top + new_h, left + new_w)
    # center_crop: like torchvision Resize(S) on the shorter side, then CenterCrop(S) (open_clip's eval).
    scale = size / min(height, width)
    new_w, new_h = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    resized = resize_rgb(image, new_w, new_h, cfg.interpolation)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    crop = (
        int(top / scale),
        int(left / scale),
        min(height, round((top + size) / scale)),
        min(width, round((left + size) / scale)),
    )
    return resized[top : top + size, left : left + size], Geometry(height, width, 0, 0, size, size, crop)


def normalize(images: np.ndarray, cfg: PreprocessConfig) -> torch.Tensor:
    """Turn ``(B, S, S, 3)`` uint8 RGB into the ``(B, 3, S, S)`` float32 tensor CLIP expects."""
    pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(cfg.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(cfg.std, dtype=torch.float32).view(1, 3, 1, 1)
    return (pixels - mean) / std


def preprocess(
    images: Sequence[np.ndarray | bytes],
    cfg: PreprocessConfig,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> tuple[torch.Tensor, list[Geometry]]:
    """Decode (if bytes), resize and normalise a batch.

    Args:
        images: RGB uint8 arrays ``(H, W, 3)`` or encoded JPEG/PNG bytes, in any mix.
        cfg: the preprocessing of the backbone.
        limits: limits for encoded inputs.

    Returns:
        ``(B, 3, S, S)`` float32 tensor and one :class:`Geometry` per image.
    """
    resized, geometries = [], []
    for item in images:
        rgb = decode_image(item, limits) if isinstance(item, bytes | bytearray) else _as_rgb(item)
        image, geometry = resize_image(rgb, cfg)
        resized.append(image)
        geometries.append(geometry)
    if not resized:
        raise ValueError("preprocess() needs at least one image")
    return normalize(np.stack(resized), cfg), geometries


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if image.dtype != np.uint8:
        raise TypeError(f"image arrays must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image arrays must have shape (H, W, 3), got {image.shape}")
    return image


def map_to_original(anomaly_map: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Place an ``(S, S)`` anomaly map back on the original ``(H, W)`` image.

    Squash and letterbox invert exactly (the padding is cut off); for ``center_crop`` the pixels outside the
    crop were never seen by the model and are set to the map's minimum.
    """
    content = anomaly_map[geometry.top : geometry.bottom, geometry.left : geometry.right]
    if geometry.crop is None:
        return cv2.resize(content, (geometry.width, geometry.height), interpolation=cv2.INTER_LINEAR)
    top, left, bottom, right = geometry.crop
    full = np.full((geometry.height, geometry.width), float(anomaly_map.min()), dtype=anomaly_map.dtype)
    full[top:bottom, left:right] = cv2.resize(content, (right - left, bottom - top), interpolation=cv2.INTER_LINEAR)
    return full
