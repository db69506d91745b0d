"""Encoded images in and out, with limits checked before any pixel is decoded; no torch.

Why a module of its own: every frame from a file, a camera or a Kafka message passes through these guards
(empty, not an image, truncated, oversized, dimension bombs) before a large allocation. Kafka ingest
processes decode frames but never run a model, so this module imports only Pillow, OpenCV, simplejpeg and
numpy: an ingest actor does not pay torch's import time and memory.

Whether a payload is complete is decided by decoding it, never by looking for end markers: a camera may
append metadata after a JPEG's end-of-image marker, and a cut payload may end in a copied marker. JPEG goes
through libjpeg-turbo (simplejpeg) in strict mode, which reports libjpeg's premature-end condition instead of
filling the missing rows with grey; PNG goes through libpng (OpenCV), which refuses missing image data and
bad checksums. Pixels are taken as stored: EXIF orientation is not applied, so a camera's ROI always names
the same sensor pixels.

Ingest only needs the model's input, not the frame: :func:`plan_model_input` and :func:`decode_model_input`
decode large JPEGs at 1/2, 1/4 or 1/8 scale in the DCT domain and shrink what remains by box averaging, so
an actor never holds more than one decoded frame per decode and sends a few hundred KB per frame onwards.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import simplejpeg
from PIL import Image

from zsad_core.errors import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    TruncatedImageError,
    UnsupportedImageError,
    ZsadError,
)

Interpolation = Literal["bicubic", "bilinear"]

_PIL_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
_JPEG_DCT_SCALES = (8, 4, 2)  # libjpeg decodes at 1/8, 1/4 or 1/2 scale for the price of that many pixels
# A reduced region stays at least this many times the model input, so the last (Pillow) resize still does a
# real anti-aliased reduction. DCT scaling is a good low-pass filter; box averaging is a cruder one and keeps
# more room (measured on the tiny ViT with CLIP-AD: map differences 2.4% of the range, and 10% with 2).
_DCT_MARGIN = 2
_BOX_MARGIN = 4
# OpenCV decodes pixels as stored (no EXIF turn), like libjpeg-turbo does for JPEG.
_CV2_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


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
        EmptyImageError, UnsupportedImageError, ImageTooLargeError. Whether the pixel data is complete is
        only known by decoding it (:func:`decode_image`).
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
    return fmt, width, height


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG bytes to an RGB uint8 array after the checks of :func:`probe_image`.

    Returns:
        ``(H, W, 3)`` uint8 array in RGB order.

    Raises:
        The errors of :func:`probe_image`; TruncatedImageError when the pixel data ends early or is damaged.
    """
    fmt, width, height = probe_image(data, limits)
    return _decode_pixels(data, fmt, width, height, 1)


@dataclass(frozen=True)
class FrameGeometry:
    """How a model input was cut from its frame: enough to place a map back on the original pixels.

    Attributes:
        frame_width, frame_height: the frame as encoded.
        region: ``(x, y, w, h)`` in frame pixels, the part of the frame the model input shows (the camera's
            ROI, or the whole frame).
        size: side of the square model input the region was squashed to.
        decode_scale: 1, 2, 4 or 8: the frame was decoded at ``1/decode_scale`` of its size (JPEG DCT scaling).
    """

    frame_width: int
    frame_height: int
    region: tuple[int, int, int, int]
    size: int
    decode_scale: int = 1

    @property
    def decoded_pixels(self) -> int:
        """Pixels the decoder allocates for this frame: what a decode-memory budget counts."""
        scale = self.decode_scale
        return math.ceil(self.frame_width / scale) * math.ceil(self.frame_height / scale)

    @property
    def scale(self) -> tuple[float, float]:
        """Model-input pixels per frame pixel, ``(x, y)``: a map pixel ``(u, v)`` lies at frame pixel
        ``(x + u / scale_x, y + v / scale_y)``."""
        _, _, width, height = self.region
        return self.size / width, self.size / height


def plan_model_input(
    fmt: str, width: int, height: int, size: int, region: tuple[int, int, int, int] | None = None
) -> FrameGeometry:
    """Choose how to decode a ``width`` x ``height`` frame whose ``region`` becomes a ``size`` x ``size`` input.

    A JPEG is decoded at the smallest of 1/8, 1/4, 1/2 scale that still leaves the region at least twice the
    model input in both directions, so the final resize keeps its own anti-aliasing and the model sees what
    resizing the full decode gives, up to interpolation. A region under four times the model input is
    decoded whole and gives exactly the pixels of resizing the full decode.

    Raises:
        ValueError: ``region`` does not lie inside the frame, or ``size`` is not positive.
    """
    x, y, region_w, region_h = region if region is not None else (0, 0, width, height)
    if size <= 0:
        raise ValueError(f"model input size must be positive, got {size}")
    if min(x, y) < 0 or region_w <= 0 or region_h <= 0 or x + region_w > width or y + region_h > height:
        raise ValueError(f"region {(x, y, region_w, region_h)} does not lie inside the {width}x{height} frame")
    room = min(region_w, region_h) // (_DCT_MARGIN * size)
    scale = next((s for s in _JPEG_DCT_SCALES if s <= room), 1) if fmt == "JPEG" else 1
    return FrameGeometry(width, height, (x, y, region_w, region_h), size, scale)


def decode_model_input(
    data: bytes,
    geometry: FrameGeometry,
    limits: ImageLimits = DEFAULT_LIMITS,
    interpolation: Interpolation = "bicubic",
) -> np.ndarray:
    """Decode a frame as planned by :func:`plan_model_input` and squash its region to the model input.

    The region is placed on the reduced decode with sub-pixel precision (Pillow's resize box). A region
    still over eight times the model input (a PNG, or a JPEG beyond 1/8 scale) is first box-averaged by an
    integer factor down to at least four times, so it is never copied whole into a Pillow image.

    Returns:
        ``(size, size, 3)`` uint8 RGB.

    Raises:
        The errors of :func:`decode_image`; ValueError when ``geometry`` was planned for another frame.
    """
    fmt, width, height = probe_image(data, limits)
    if (width, height) != (geometry.frame_width, geometry.frame_height):
        raise ValueError(
            f"geometry is for a {geometry.frame_width}x{geometry.frame_height} frame, not {width}x{height}"
        )
    pixels = _decode_pixels(data, fmt, width, height, geometry.decode_scale)
    to_x, to_y = pixels.shape[1] / width, pixels.shape[0] / height
    x, y, region_w, region_h = geometry.region
    box = (x * to_x, y * to_y, (x + region_w) * to_x, (y + region_h) * to_y)
    left, top = math.floor(box[0]), math.floor(box[1])
    region = pixels[top : math.ceil(box[3]), left : math.ceil(box[2])]
    box = (box[0] - left, box[1] - top, box[2] - left, box[3] - top)
    del pixels  # from here the full decode lives only as long as the view ``region`` still points into it
    times = math.floor(min(box[2] - box[0], box[3] - box[1]) / (_BOX_MARGIN * geometry.size))
    if times >= 2:
        rows, cols = region.shape[:2]
        region = cv2.resize(region, (-(-cols // times), -(-rows // times)), interpolation=cv2.INTER_AREA)
        fx, fy = region.shape[1] / cols, region.shape[0] / rows
        box = (box[0] * fx, box[1] * fy, box[2] * fx, box[3] * fy)
    return resize_rgb(region, geometry.size, geometry.size, interpolation, box)


def resize_rgb(
    image: np.ndarray,
    width: int,
    height: int,
    interpolation: Interpolation = "bicubic",
    box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """Resize with Pillow's filters (open_clip's and the papers' resampling); the same array when nothing changes.

    Args:
        box: ``(left, top, right, bottom)`` of ``image`` to resize, in (fractional) pixels; the whole image
            when None.
    """
    whole = (0, 0, image.shape[1], image.shape[0])
    if box == whole:
        box = None
    if box is None and image.shape[1] == width and image.shape[0] == height:
        return image
    source = Image.fromarray(np.ascontiguousarray(image))
    return np.asarray(source.resize((width, height), _PIL_FILTERS[interpolation], box=box))


def _decode_pixels(data: bytes, fmt: str, width: int, height: int, scale: int) -> np.ndarray:
    """Decode at ``1/scale`` (JPEG only), refusing data that ends early or is damaged."""
    if fmt == "JPEG":
        pixels = _decode_jpeg(data, math.ceil(width / scale), math.ceil(height / scale))
    elif scale != 1:
        raise ValueError(f"only JPEG decodes at reduced scale, not {fmt}")
    else:
        pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _CV2_FLAGS)
        if pixels is None:  # the header was read above, so libpng refused the image data itself
            raise TruncatedImageError("PNG image data is incomplete or damaged (libpng refused it)")
        cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB, dst=pixels)  # in place: no second frame-sized buffer
    expected = (math.ceil(height / scale), math.ceil(width / scale))
    if pixels.shape[:2] != expected:
        raise UnsupportedImageError(f"decoded {pixels.shape[1]}x{pixels.shape[0]} pixels, header promised "
                                    f"{expected[1]}x{expected[0]}")  # fmt: skip
    return pixels


def _decode_jpeg(data: bytes, min_width: int, min_height: int) -> np.ndarray:
    """libjpeg-turbo decode at the smallest scale that is at least ``min_width`` x ``min_height``.

    Strict mode turns libjpeg's warnings into errors, where OpenCV and Pillow only print them and fill the
    missing rows: a premature end (the data stops inside the image, whether or not an end marker follows)
    is a truncated frame; any other warning (corrupt data) or error refuses it as unreadable.
    """
    try:
        return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_width, min_height=min_height)
    except ValueError as exc:
        if "premature end" in str(exc).lower():
            raise TruncatedImageError(f"JPEG data ends before the image does: {exc}") from exc
        raise UnsupportedImageError(f"JPEG data cannot be decoded: {exc}") from exc


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def image_files(folder: str | Path, error: type[ZsadError], *, recursive: bool = False) -> list[Path]:
    """The ``.png``/``.jpg``/``.jpeg`` files of ``folder`` (of its sub-folders too when ``recursive``) in path
    order; other files are passed over.

    Raises:
        error: no such folder, or no images in it (the caller's error, so the message reaches its user as its own).
    """
    root = Path(folder)
    if not root.is_dir():
        raise error(f"{root} is not a folder")
    entries = root.rglob("*") if recursive else root.iterdir()
    files = sorted(path for path in entries if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise error(f"{root} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    return files


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
