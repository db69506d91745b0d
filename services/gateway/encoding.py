"""Turning what a source captured into the bytes of a record: kept, re-encoded or downscaled, within the limits.

Why at the gateway: a frame the pipeline would refuse (above ``limits.max_bytes``, not an image, cut short)
is better refused where its source can still say which file or camera it came from; and a 20 MP sensor frame
downscaled before Kafka costs the network, the broker and ingest a fraction of the bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from services.config import ConfigError, LimitsConfig
from services.frame_path.producer import FrameTooLargeError
from services.gateway.frames import GatewayFrame
from services.gateway.part_identity import PartIdentity
from services.records import ContentType, FrameHeaders
from zsad_core.imageio import ImageLimits, decode_image, encode_jpeg, encode_png, resize_rgb

Format = Literal["keep", "jpeg", "png"]
FORMATS: tuple[str, ...] = ("keep", "jpeg", "png")
# Decoded-frame ceiling for inputs that will be re-encoded anyway: the size limit then applies to the output.
_UNBOUNDED_INPUT_BYTES = 1 << 40


@dataclass(frozen=True)
class FrameEncoding:
    """How a camera's frames are encoded for Kafka.

    Attributes:
        format: ``keep`` sends a file's bytes as they are (a stream or camera frame becomes JPEG); ``jpeg`` or
            ``png`` re-encodes.
        jpeg_quality: 1-100, for JPEG output.
        max_side: frames with a longer side are downscaled to it (aspect kept); ``None`` never downscales.
    """

    format: Format = "keep"
    jpeg_quality: int = 90
    max_side: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"encoding format must be one of {FORMATS}, got {self.format!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ConfigError(f"JPEG quality must be within 1..100, got {self.jpeg_quality}")
        if self.max_side is not None and self.max_side < 16:
            raise ConfigError(f"max side must be at least 16 pixels, got {self.max_side}")


def frame_from_bytes(
    payload: bytes,
    *,
    camera: str,
    frame_id: str,
    capture_ts: float,
    encoding: FrameEncoding,
    limits: LimitsConfig,
    part: PartIdentity,
) -> GatewayFrame:
    """A frame from an encoded image (a file), checked by decoding it fully.

    Raises:
        ImageError: not a JPEG/PNG, truncated or damaged, or above the pixel limits (its ``reason`` says which).
        FrameTooLargeError: the bytes to send are above ``limits.max_bytes``.
        BadHeadersError: the camera or frame id breaks the record contract.
    """
    keep = encoding.format == "keep"
    image_limits = ImageLimits(
        max_bytes=limits.max_bytes if keep else _UNBOUNDED_INPUT_BYTES,
        max_pixels=limits.max_pixels,
        max_side=limits.max_side,
    )
    pixels = decode_image(payload, image_limits)
    if keep and not _needs_downscale(pixels, encoding):
        return _checked(payload, _content_type(payload), camera, frame_id, capture_ts, limits, part)
    return frame_from_pixels(pixels, camera=camera, frame_id=frame_id, capture_ts=capture_ts,
                             encoding=encoding, limits=limits, part=part)  # fmt: skip


def frame_from_pixels(
    pixels: np.ndarray,
    *,
    camera: str,
    frame_id: str,
    capture_ts: float,
    encoding: FrameEncoding,
    limits: LimitsConfig,
    part: PartIdentity,
) -> GatewayFrame:
    """A frame from an RGB (or single-channel) uint8 array: downscaled if asked, then encoded.

    Raises:
        FrameTooLargeError, BadHeadersError: as :func:`frame_from_bytes`.
    """
    if _needs_downscale(pixels, encoding):
        pixels = _downscaled(pixels, encoding.max_side or 0)
    if encoding.format == "png":
        payload, content_type = encode_png(pixels), "image/png"
    else:
        rgb = pixels if pixels.ndim == 3 else np.repeat(pixels[..., None], 3, axis=2)
        payload, content_type = encode_jpeg(rgb, quality=encoding.jpeg_quality), "image/jpeg"
    return _checked(payload, content_type, camera, frame_id, capture_ts, limits, part)


def _needs_downscale(pixels: np.ndarray, encoding: FrameEncoding) -> bool:
    return encoding.max_side is not None and max(pixels.shape[:2]) > encoding.max_side


def _downscaled(pixels: np.ndarray, max_side: int) -> np.ndarray:
    height, width = pixels.shape[:2]
    scale = max_side / max(height, width)
    # Pillow resizes single-channel arrays too (mode L), so Mono8 frames stay single-channel until encoding.
    return resize_rgb(pixels, max(1, round(width * scale)), max(1, round(height * scale)))


def _content_type(payload: bytes) -> ContentType:
    return "image/png" if payload[:4] == b"\x89PNG" else "image/jpeg"


def _checked(
    payload: bytes,
    content_type: ContentType,
    camera: str,
    frame_id: str,
    capture_ts: float,
    limits: LimitsConfig,
    part: PartIdentity,
) -> GatewayFrame:
    if len(payload) > limits.max_bytes:
        raise FrameTooLargeError(
            f"frame {frame_id} of {camera} has {len(payload):,} bytes after encoding, above limits.max_bytes "
            f"({limits.max_bytes:,})"
        )
    FrameHeaders.create(camera, frame_id, capture_ts, content_type)
    return GatewayFrame(camera, frame_id, capture_ts, payload, content_type, tuple(part.headers()))
