"""Kafka records to model inputs: validation order, the camera's input size and ROI, bytes sent onwards."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from PIL import Image

from services.config import CameraConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import FrameRequest, RoiOutsideFrameError, decode_record, model_input_sizes
from services.records import encode_headers
from zsad_core.errors import TruncatedImageError
from zsad_core.imageio import DEFAULT_LIMITS, FrameGeometry, decode_image, encode_jpeg, encode_png

CAMERAS = {
    "whole": CameraConfig(method="clip-ad", class_name="bottle", threshold=0.5, image_size=64),
    "roi": CameraConfig(method="clip-ad", class_name="bottle", threshold=0.5, image_size=64, roi=(40, 30, 900, 700)),
}
SIZES = {"whole": 64, "roi": 64}


@dataclass
class Record:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = "frames"
    partition: int = 1
    offset: int = 7


def _record(camera: str, payload: bytes, content_type: str = "image/jpeg") -> Record:
    return Record(camera.encode(), payload, encode_headers("f-1", 1.0e9, content_type))


def _frame(height: int, width: int) -> np.ndarray:
    small = np.random.default_rng(0).integers(0, 256, (height // 32, width // 32, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _decode(record: Record, budget: DecodeBudget | None = None) -> FrameRequest:
    return decode_record(record, CAMERAS, DEFAULT_LIMITS, input_sizes=SIZES, budget=budget or DecodeBudget(10**8))


def test_an_ordinary_frame_becomes_the_model_input_the_replica_would_have_made() -> None:
    image = _frame(96, 128)
    request = _decode(_record("whole", encode_png(image), "image/png"))
    expected = np.asarray(Image.fromarray(image).resize((64, 64), Image.Resampling.BICUBIC))
    assert np.array_equal(request.image, expected)
    assert request.geometry == FrameGeometry(128, 96, (0, 0, 128, 96), 64, 1)
    assert (request.partition, request.offset, request.frame_id) == (1, 7, "f-1")


def test_a_large_frame_sends_only_the_model_input_with_its_geometry() -> None:
    data = encode_jpeg(_frame(3000, 4000), quality=90)
    request = _decode(_record("roi", data))
    assert request.image.shape == (64, 64, 3)
    assert request.geometry == FrameGeometry(4000, 3000, (40, 30, 900, 700), 64, 4)
    assert request.geometry.scale == pytest.approx((64 / 900, 64 / 700))
    sent = len(pickle.dumps(request, protocol=5))
    assert sent < 64 * 64 * 3 + 2048, sent  # the frame itself was 36 MB of RGB, the ROI 1.9 MB
    full_roi = decode_image(data)[30:730, 40:940]
    reference = np.asarray(Image.fromarray(full_roi).resize((64, 64), Image.Resampling.BICUBIC)).astype(int)
    assert np.abs(request.image.astype(int) - reference).mean() < 2


def test_the_roi_is_checked_against_the_header_before_any_decode() -> None:
    budget = DecodeBudget(1)
    # The budget is taken, so a decode would wait forever: the check must come first.
    with budget.hold(1), pytest.raises(RoiOutsideFrameError, match="900"):
        _decode(_record("roi", encode_jpeg(_frame(480, 640))), budget)


def test_a_truncated_frame_with_an_end_marker_is_dead_lettered_as_truncated() -> None:
    data = encode_jpeg(_frame(480, 640))
    with pytest.raises(TruncatedImageError) as info:
        _decode(_record("whole", data[: len(data) // 2] + b"\xff\xd9"))
    assert info.value.reason == "truncated"
    assert _decode(_record("whole", data + bytes(64))).image.shape == (64, 64, 3)


def test_model_input_sizes_come_from_the_camera_or_its_methods_official_size() -> None:
    cameras = {
        "set": CAMERAS["whole"],
        "official": CameraConfig(method="vcp-clip", class_name="bottle", threshold=0.5),
    }
    assert model_input_sizes(cameras) == {"set": 64, "official": 518}
