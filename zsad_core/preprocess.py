"""Image decoding with limits, and CLIP preprocessing with the resize policies the methods need.

Why a module of its own: every frame that reaches a model passes through here, from a file, a camera or a
Kafka message, so the guards against bad input (empty, not an image, truncated, oversized, dimension bombs)
live in one place and run *before* any large allocation. The resize itself goes through Pillow's bicubic
filter because that is what open_clip's transform and the papers' evaluation (torchvision ``Resize`` on PIL
images) use: the pixels the model sees are then the same as in the papers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch
from PIL import Image

from zsad_core.errors import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedImageError,
)

ResizeMode = Literal["squash", "letterbox", "center_crop"]
Interpolation = Literal["bicubic", "bilinear"]

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND"


@dataclass(frozen=True)
class ImageLimits:
    """Limits applied to encoded images before they are decoded.

    Attributes:
        max_bytes: largest accepted payload; a camera frame is a few MB at most.
        max_pixels: largest accepted width x height, read from the header, so a 50,000 x 50,000 PNG of a few
            KB is refused before OpenCV allocates 7.5 GB for it.
        max_side: largest accepted width or height.
        formats: Pillow format names accepted.
    """

    max_bytes: int = 32 * 1024 * 1024
    max_pixels: int = 64_000_000
    max_side: int = 16_384
    formats: frozenset[str] = field(default_factory=lambda: frozenset({"JPEG", "PNG"}))


DEFAULT_LIMITS = ImageLimits()


def probe_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> tuple[str, int, int]:
    """Check an encoded image against ``limits`` without decoding its pixels.

    Args:
        data: the encoded bytes.
        limits: the limits to enforce.

    Returns:
        ``(format, width, height)`` as declared by the header.

    Raises:
        EmptyImageError, UnsupportedImageError, TruncatedImageError, ImageTooLargeError.
    """
    if not data:
        raise EmptyImageError("image payload is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image payload has {len(data)} bytes, limit is {limits.max_bytes}")
    try:
        # Image.open reads only the header; pixels are not decoded here.
        with Image.open(io.BytesIO(data)) as header:
            fmt, (width, height) = header.format or "", header.size
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image header declares too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedImageError(f"payload of {len(data)} bytes is not a readable image") from exc
    if fmt not in limits.formats:
        raise UnsupportedImageError(f"image format {fmt!r} is not accepted (accepted: {sorted(limits.formats)})")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image declares {width}x{height} pixels; limits are side <= {limits.max_side}, "
            f"pixels <= {limits.max_pixels}"
        )
    _check_complete(data, fmt)
    return fmt, width, height


def _check_complete(data: bytes, fmt: str) -> None:
    """Refuse payloads that were cut short: decoders would silently fill the missing rows."""
    tail = data[-32:].rstrip(b"\x00")
    if fmt == "JPEG" and not tail.endswith(_JPEG_EOI):
        raise TruncatedImageError("JPEG payload has no end-of-image marker (truncated)")
    if fmt == "PNG" and _PNG_IEND not in data[-16:]:
        raise TruncatedImageError("PNG payload has no IEND chunk (truncated)")


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array after the checks of :func:`probe_image`.

    Returns:
        ``(H, W, 3)`` uint8 array in RGB order.
    """
    _, width, height = probe_image(data, limits)
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.shape[:2] != (height, width):
        raise UnsupportedImageError("OpenCV could not decode the image payload")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_image(path: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read an image file as RGB uint8 with the same guards as network input; errors name the file."""
    with open(path, "rb") as handle:
        data = handle.read(limits.max_bytes + 1)
    try:
        return decode_image(data, limits)
    except ImageError as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def encode_png(image: np.ndarray) -> bytes:
    """Encode an RGB uint8 (or single-channel uint8/uint16) array as PNG bytes."""
    array = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    """Encode an RGB uint8 array as JPEG bytes."""
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buffer.tobytes()


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


def _pil_resize(image: np.ndarray, width: int, height: int, interpolation: Interpolation) -> np.ndarray:
    if image.shape[1] == width and image.shape[0] == height:
        return image
    resized = Image.fromarray(image).resize((width, height), _PIL_FILTERS[interpolation])
    return np.asarray(resized)


def resize_image(image: np.ndarray, cfg: PreprocessConfig) -> tuple[np.ndarray, Geometry]:
    """Resize one RGB uint8 image to ``cfg.image_size`` by the configured policy.

    Returns:
        The ``(S, S, 3)`` uint8 image and its :class:`Geometry`.
    """
    size = cfg.image_size
    height, width = image.shape[:2]
    if cfg.resize == "squash":
        return _pil_resize(image, size, size, cfg.interpolation), Geometry(height, width, 0, 0, size, size)
    if cfg.resize == "letterbox":
        scale = size / max(height, width)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = np.full((size, size, 3), cfg.fill, dtype=np.uint8)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = _pil_resize(image, new_w, new_h, cfg.interpolation)
        return canvas, Geometry(height, width, top, left, top + new_h, left + new_w)
    # center_crop: like torchvision Resize(S) on the shorter side, then CenterCrop(S) (open_clip's eval).
    scale = size / min(height, width)
    new_w, new_h = (size, int(size * height / width)) if width <= height else (int(size * width / height), size)
    resized = _pil_resize(image, new_w, new_h, cfg.interpolation)
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
