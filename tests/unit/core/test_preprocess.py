"""Decoding guards and preprocessing against open_clip's own transform."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from zsad_core.errors import EmptyImageError, ImageTooLargeError, TruncatedImageError, UnsupportedImageError
from zsad_core.preprocess import (
    Geometry,
    ImageLimits,
    PreprocessConfig,
    decode_image,
    encode_jpeg,
    encode_png,
    map_to_original,
    preprocess,
    read_image,
    resize_image,
)

MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)


def _image(height: int = 90, width: int = 130, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but which carries almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


@pytest.mark.parametrize("resize", ["center_crop", "squash"])
def test_matches_open_clip_transform(resize):
    image = _image(90, 130)
    transform = open_clip.image_transform(64, is_train=False, mean=MEAN, std=STD,
                                          resize_mode="shortest" if resize == "center_crop" else "squash")
    expected = transform(Image.fromarray(image))
    ours, _ = preprocess([image], PreprocessConfig(64, MEAN, STD, resize=resize))
    torch.testing.assert_close(ours[0], expected, atol=1e-5, rtol=0)


def test_bytes_and_arrays_give_the_same_batch():
    image = _image()
    cfg = PreprocessConfig(32, MEAN, STD)
    from_bytes, _ = preprocess([encode_png(image), image], cfg)
    assert from_bytes.shape == (2, 3, 32, 32)
    assert torch.equal(from_bytes[0], from_bytes[1])


def test_letterbox_keeps_aspect_and_inverts():
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    cfg = PreprocessConfig(40, MEAN, STD, resize="letterbox", fill=7)
    resized, geometry = resize_image(image, cfg)
    assert resized.shape == (40, 40, 3)
    assert (geometry.top, geometry.bottom, geometry.left, geometry.right) == (10, 30, 0, 40)
    assert (resized[:10] == 7).all() and (resized[30:] == 7).all()
    square = np.zeros((40, 40), dtype=np.float32)
    square[10:30] = 1.0
    back = map_to_original(square, geometry)
    assert back.shape == (50, 100)
    assert np.allclose(back, 1.0)


def test_squash_map_goes_back_to_original_size():
    back = map_to_original(np.ones((16, 16), np.float32), Geometry(30, 50, 0, 0, 16, 16))
    assert back.shape == (30, 50)


def test_decode_round_trip_png_and_jpeg():
    image = _image()
    assert np.array_equal(decode_image(encode_png(image)), image)
    assert decode_image(encode_jpeg(image)).shape == image.shape


def test_empty_payload():
    with pytest.raises(EmptyImageError):
        decode_image(b"")


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("this is a text file, not a picture")
    with pytest.raises(UnsupportedImageError, match=r"notes\.png"):
        read_image(str(path))


def test_truncated_jpeg():
    data = encode_jpeg(_image(200, 200))
    with pytest.raises(TruncatedImageError):
        decode_image(data[: len(data) // 2])


def test_truncated_png():
    data = encode_png(_image(64, 64))
    with pytest.raises(TruncatedImageError):
        decode_image(data[:-20])


def test_dimension_bomb_is_refused_before_decoding(monkeypatch):
    data = _png_header_only(50_000, 50_000)
    assert len(data) < 200

    def no_decode(*args, **kwargs):
        raise AssertionError("the decoder must not run on a bomb")

    monkeypatch.setattr("zsad_core.preprocess.cv2.imdecode", no_decode)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(data)


def test_payload_size_limit_and_format_allow_list():
    image = _image(32, 32)
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(encode_png(image), ImageLimits(max_bytes=100))
    with pytest.raises(UnsupportedImageError, match="format"):
        decode_image(encode_png(image), ImageLimits(formats=frozenset({"JPEG"})))


def test_array_validation():
    cfg = PreprocessConfig(16, MEAN, STD)
    with pytest.raises(TypeError):
        preprocess([np.zeros((8, 8, 3), np.float32)], cfg)
    with pytest.raises(ValueError, match="shape"):
        preprocess([np.zeros((8, 8, 4), np.uint8)], cfg)
    gray, _ = preprocess([np.zeros((8, 8), np.uint8)], cfg)
    assert gray.shape == (1, 3, 16, 16)


def test_our_pixel_limit_applies_below_pillows_own_bomb_threshold():
    with pytest.raises(ImageTooLargeError, match="12000x12000"):
        decode_image(_png_header_only(12_000, 12_000))
