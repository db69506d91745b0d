"""Encoding at the gateway: bytes kept or re-encoded, downscaled, refused above limits.max_bytes or when invalid."""

from __future__ import annotations

import numpy as np
import pytest

from services.config import ConfigError, LimitsConfig
from services.gateway.encoding import FrameEncoding, frame_from_bytes, frame_from_pixels
from services.gateway.part_identity import PartIdentity
from services.records import BadHeadersError
from zsad_core.errors import ZsadError
from zsad_core.imageio import decode_image, encode_png

PIXELS = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
PNG = encode_png(PIXELS)


def _from_bytes(payload: bytes, encoding: FrameEncoding, limits: LimitsConfig | None = None, frame_id: str = "f-1"):
    return frame_from_bytes(payload, camera="cam", frame_id=frame_id, capture_ts=1_700_000_000.0, encoding=encoding,
                            limits=limits or LimitsConfig(), part=PartIdentity(serial="SN1"))  # fmt: skip


def test_keep_sends_the_file_bytes_untouched_with_the_part_headers() -> None:
    frame = _from_bytes(PNG, FrameEncoding())
    assert frame.payload == PNG and frame.content_type == "image/png"
    assert frame.extra_headers == (("zsad-part-serial", b"SN1"),)


def test_jpeg_with_a_max_side_downscales_keeping_the_aspect() -> None:
    frame = _from_bytes(PNG, FrameEncoding("jpeg", 80, max_side=100))
    assert frame.content_type == "image/jpeg"
    assert decode_image(frame.payload).shape == (75, 100, 3)


def test_a_mono_frame_stays_single_channel_in_png_and_becomes_rgb_in_jpeg() -> None:
    mono = PIXELS[..., 0]
    as_png = frame_from_pixels(mono, camera="cam", frame_id="m-1", capture_ts=1_700_000_000.0,
                               encoding=FrameEncoding("png"), limits=LimitsConfig(), part=PartIdentity())  # fmt: skip
    as_jpeg = frame_from_pixels(mono, camera="cam", frame_id="m-2", capture_ts=1_700_000_000.0,
                                encoding=FrameEncoding("jpeg"), limits=LimitsConfig(), part=PartIdentity())  # fmt: skip
    assert np.array_equal(decode_image(as_png.payload)[..., 1], mono)
    assert decode_image(as_jpeg.payload).shape == (300, 400, 3)


@pytest.mark.parametrize("encoding", [FrameEncoding(), FrameEncoding("jpeg", 95)])
def test_a_frame_above_max_bytes_is_refused_at_the_gateway(encoding: FrameEncoding) -> None:
    with pytest.raises(ZsadError, match="limit") as refused:
        _from_bytes(PNG, encoding, LimitsConfig(max_bytes=10_000))
    assert refused.value.reason == "too_large"


def test_invalid_input_is_refused_with_a_reason() -> None:
    with pytest.raises(ZsadError) as cut:
        _from_bytes(PNG[: len(PNG) // 2], FrameEncoding())
    assert cut.value.reason == "truncated"
    with pytest.raises(BadHeadersError):
        _from_bytes(PNG, FrameEncoding(), frame_id="has space")


def test_bad_encoding_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="JPEG quality"):
        FrameEncoding("jpeg", 0)
    with pytest.raises(ConfigError, match="max side"):
        FrameEncoding(max_side=4)
