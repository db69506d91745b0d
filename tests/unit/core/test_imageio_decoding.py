"""Truncation decided by decoding, and model inputs decoded at reduced scale with the least memory."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from zsad_core.errors import TruncatedImageError, UnsupportedImageError
from zsad_core.imageio import (
    FrameGeometry,
    decode_image,
    decode_model_input,
    encode_png,
    plan_model_input,
)

CAMERA_METADATA = bytes(range(64))  # what a camera appends after the end of the image


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth picture with edges, like a camera frame (pure noise would be all high frequencies)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    image = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    cv2.rectangle(image, (width // 5, height // 4), (width // 2, height // 2), (250, 20, 20), thickness=-1)
    return image


def _jpeg(image: np.ndarray, progressive: bool = False) -> bytes:
    flags = [cv2.IMWRITE_JPEG_QUALITY, 92, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    return cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), flags)[1].tobytes()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_from_rows(width: int, height: int, raw_rows: bytes) -> bytes:
    """An 8-bit RGB PNG with correct framing and checksums around whatever filtered rows it is given."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw_rows)) + _chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# -- truncation: decided by decoding, not by markers ---------------------------------------------------------
@pytest.mark.parametrize("progressive", [False, True])
def test_half_a_jpeg_with_an_end_marker_appended_is_truncated(progressive: bool) -> None:
    data = _jpeg(_scene(128, 160), progressive)
    with pytest.raises(TruncatedImageError, match="premature end"):
        decode_image(data[: len(data) // 2] + b"\xff\xd9")
    with pytest.raises(TruncatedImageError):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize("progressive", [False, True])
def test_a_complete_jpeg_with_trailing_metadata_is_accepted_whole(progressive: bool) -> None:
    data = _jpeg(_scene(128, 160), progressive)
    reference = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(data + CAMERA_METADATA), reference)


def test_a_jpeg_with_corrupt_segments_is_refused_with_libjpegs_reason() -> None:
    data = _jpeg(_scene(64, 64))
    app0_end = 4 + int.from_bytes(data[4:6], "big")
    with pytest.raises(UnsupportedImageError, match="extraneous bytes"):
        decode_image(data[:app0_end] + b"\x00\x01\x02" + data[app0_end:])


def test_half_a_png_with_its_end_chunk_appended_is_truncated() -> None:
    data = encode_png(_scene(96, 80))
    with pytest.raises(TruncatedImageError):
        decode_image(data[: len(data) // 2] + _chunk(b"IEND", b""))


def test_a_png_whose_image_data_stops_early_is_truncated_even_with_perfect_framing() -> None:
    width, height = 40, 30
    rows = [b"\x00" + bytes([row]) * (3 * width) for row in range(height)]
    assert decode_image(_png_from_rows(width, height, b"".join(rows)))[29, 0, 0] == 29  # the well-formed one decodes
    with pytest.raises(TruncatedImageError):
        decode_image(_png_from_rows(width, height, b"".join(rows[: height // 2])))


def test_a_png_with_a_damaged_image_checksum_is_refused() -> None:
    data = bytearray(encode_png(_scene(40, 40)))
    idat_crc = data.index(b"IEND") - 8  # the IDAT's CRC sits just before the IEND chunk's length field
    data[idat_crc] ^= 0xFF
    with pytest.raises(TruncatedImageError):
        decode_image(bytes(data))


def test_a_complete_png_with_trailing_metadata_is_accepted_whole() -> None:
    image = _scene(96, 80)
    assert np.array_equal(decode_image(encode_png(image) + CAMERA_METADATA), image)


# -- model inputs at reduced scale ---------------------------------------------------------------------------
def _pillow_squash(image: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC))


def test_plans_reduce_only_jpegs_and_keep_twice_the_input() -> None:
    assert plan_model_input("JPEG", 96, 96, 64).decode_scale == 1
    assert plan_model_input("JPEG", 300, 255, 64).decode_scale == 1  # 1/2 would leave under 2 x 64 rows
    assert plan_model_input("JPEG", 300, 256, 64).decode_scale == 2
    assert plan_model_input("JPEG", 1100, 1024, 64).decode_scale == 8
    big = plan_model_input("JPEG", 8000, 6000, 224)
    assert big.decode_scale == 8 and big.decoded_pixels == 1000 * 750
    assert plan_model_input("JPEG", 8000, 6000, 224, region=(4000, 0, 900, 900)).decode_scale == 2
    assert plan_model_input("PNG", 8000, 6000, 224).decode_scale == 1  # no DCT to scale in
    assert plan_model_input("JPEG", 1025, 1023, 64).decode_scale == 4
    assert plan_model_input("JPEG", 1025, 1023, 64).decoded_pixels == 257 * 256  # libjpeg rounds up
    with pytest.raises(ValueError, match="inside"):
        plan_model_input("JPEG", 100, 100, 64, region=(50, 0, 60, 10))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_ordinary_frame_gives_exactly_the_pixels_of_resizing_the_full_decode(fmt: str) -> None:
    image = _scene(96, 120)
    data = _jpeg(image) if fmt == "JPEG" else encode_png(image)
    geometry = plan_model_input(fmt, 120, 96, 64)
    assert geometry == FrameGeometry(120, 96, (0, 0, 120, 96), 64, 1)
    full = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_model_input(data, geometry), _pillow_squash(full, 64))


@pytest.mark.parametrize(
    ("fmt", "region"), [("JPEG", None), ("JPEG", (203, 77, 1130, 901)), ("PNG", (13, 5, 700, 600))]
)
def test_a_large_frame_differs_from_the_full_resize_only_by_interpolation(fmt: str, region: tuple | None) -> None:
    image = _scene(1200, 1600, seed=3)
    data = _jpeg(image) if fmt == "JPEG" else encode_png(image)
    geometry = plan_model_input(fmt, 1600, 1200, 64, region)
    assert geometry.decode_scale == {"JPEG": 8 if region is None else 4, "PNG": 1}[fmt]
    x, y, w, h = geometry.region
    full = cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    reference = _pillow_squash(np.ascontiguousarray(full[y : y + h, x : x + w]), 64).astype(int)
    ours = decode_model_input(data, geometry)
    assert ours.shape == (64, 64, 3)
    difference = np.abs(ours.astype(int) - reference)
    # Measured on this busy scene: mean 0.6-1.1, largest 5-12 of 255 (one filter against another).
    assert difference.mean() < 2 and difference.max() <= 16, (difference.mean(), difference.max())


def test_the_region_is_found_at_reduced_scale() -> None:
    frame = np.full((1024, 1536, 3), 30, np.uint8)
    frame[200:712, 600:1112] = (200, 120, 40)  # the ROI is this orange square, everything else is dark
    data = _jpeg(frame)
    geometry = plan_model_input("JPEG", 1536, 1024, 64, region=(600, 200, 512, 512))
    assert geometry.decode_scale == 4
    ours = decode_model_input(data, geometry).astype(int)
    inner = ours[2:-2, 2:-2]  # the JPEG's own ringing aside, no dark border leaks in
    assert np.abs(inner - np.array([200, 120, 40])).max() <= 6


def test_a_64_megapixel_jpeg_for_a_small_model_never_holds_the_full_frame() -> None:
    side = 8000
    data = _jpeg(np.zeros((side, side, 3), np.uint8) + 90)
    geometry = plan_model_input("JPEG", side, side, 224)
    tracemalloc.start()
    try:
        image = decode_model_input(data, geometry)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert image.shape == (224, 224, 3) and (image == 90).all()
    assert peak < 4 * 1000 * 1000 * 3  # the 1/8-scale decode (3 MB) and small change; the full frame is 192 MB
