"""The result store's pure parts: 16-bit map quantisation, the key layout, the result records."""

from __future__ import annotations

import numpy as np
import pytest

from services.stores.result_store import (
    MAP_LEVELS,
    FrameResult,
    StoredResult,
    camera_prefix,
    decode_map,
    encode_map,
    events_key,
    map_key,
    result_key,
    scores_key,
)


@pytest.mark.parametrize(
    ("shape", "low", "high"), [((240, 240), 0.0, 1.0), ((37, 61), -3.5, 12.25), ((1, 1), 0.2, 0.2)]
)
def test_map_round_trip_within_one_level(shape: tuple[int, int], low: float, high: float) -> None:
    rng = np.random.default_rng(0)
    original = rng.uniform(low, high, size=shape).astype(np.float32)
    png, map_min, map_scale = encode_map(original)
    assert png.startswith(b"\x89PNG")
    decoded = decode_map(png, map_min, map_scale)
    assert decoded.dtype == np.float32 and decoded.shape == shape
    span = float(original.max() - original.min())
    assert np.abs(decoded - original).max() <= max(span / MAP_LEVELS, 1e-6)
    assert map_min == pytest.approx(float(original.min()))


def test_map_extremes_are_exact_levels() -> None:
    original = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    decoded = decode_map(*encode_map(original))
    assert decoded[0, 0] == 0.0 and decoded[1, 1] == pytest.approx(1.0, abs=1e-7)


def test_constant_map_has_zero_scale() -> None:
    png, map_min, map_scale = encode_map(np.full((4, 5), 0.7, dtype=np.float32))
    assert map_scale == 0.0
    assert np.allclose(decode_map(png, map_min, map_scale), 0.7)


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 3)), np.zeros((0, 4)), np.array([[0.0, np.nan]])])
def test_bad_maps_are_refused(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="anomaly map"):
        encode_map(bad)


def test_decode_refuses_an_8_bit_png() -> None:
    from zsad_core.preprocess import encode_png

    with pytest.raises(ValueError, match="16-bit"):
        decode_map(encode_png(np.zeros((3, 3), np.uint8)), 0.0, 1.0)


def test_key_layout_shares_the_camera_hash_tag() -> None:
    assert camera_prefix("cam1") == "zsad:{cam1}"
    assert result_key("cam1", "f1") == "zsad:{cam1}:result:f1"
    assert map_key("cam1", "f1") == "zsad:{cam1}:map:f1"
    assert events_key("cam1") == "zsad:{cam1}:events"
    assert scores_key("cam1") == "zsad:{cam1}:scores"


def test_frame_result_validates_ids_and_labels() -> None:
    result = FrameResult("cam1", "f1", score=0.5, threshold=0.5, method="winclip")
    assert result.label == 1
    assert FrameResult("cam1", "f1", score=0.49, threshold=0.5, method="winclip").label == 0
    with pytest.raises(ValueError, match="camera id"):
        FrameResult("cam}1", "f1", score=0.1, threshold=0.5, method="winclip")
    with pytest.raises(ValueError, match="frame id"):
        FrameResult("cam1", "f 1", score=0.1, threshold=0.5, method="winclip")
    with pytest.raises(ValueError, match="not finite"):
        FrameResult("cam1", "f1", score=float("nan"), threshold=0.5, method="winclip")


def test_stored_result_parses_bytes_fields() -> None:
    fields = {
        b"camera": b"cam1", b"frame_id": b"f1", b"score": b"0.25", b"label": b"0", b"threshold": b"0.5",
        b"method": b"winclip", b"prompt_version": b"", b"partition": b"2", b"offset": b"17",
        b"capture_ts": b"1.5", b"infer_ts": b"2.5", b"write_ts": b"3.5", b"map_min": b"", b"map_scale": b"",
    }  # fmt: skip
    stored = StoredResult.from_fields(fields)
    assert stored.prompt_version is None and stored.map_min is None and stored.map_scale is None
    assert (stored.partition, stored.offset, stored.score, stored.write_ts) == (2, 17, 0.25, 3.5)
