"""Encoded images in and out, with limits checked before any pixel is decoded; no torch.

Why a module of its own: every frame from a file, a camera or a Kafka message passes through these guards
(empty, not an image, truncated, oversized, dimension bombs) before a large allocation. Kafka ingest
processes decode frames but never run a model, so this module imports only Pillow, OpenCV and numpy:
an ingest actor does not pay torch's import time and memory.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from zsad_core.errors import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedImageError,
)

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
