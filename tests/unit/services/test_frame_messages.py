"""The frame contract: header validation and dead-letter records."""

from __future__ import annotations

import time

import pytest

from services.records import (
    DLQ_TOPIC,
    H_CAPTURE_TS,
    H_CONTENT_TYPE,
    H_DLQ_DETAIL,
    H_DLQ_REASON,
    H_DLQ_SOURCE,
    H_FRAME_ID,
    H_SCHEMA,
    MAX_DETAIL_BYTES,
    BadHeadersError,
    DeadLetter,
    FrameHeaders,
    encode_headers,
    reason_code,
    sniff_content_type,
)
from zsad_core.errors import ImageTooLargeError, TruncatedImageError, ZsadError

NOW = 1_767_000_000.123456


def good_headers(**replace: bytes | None) -> list[tuple[str, bytes | None]]:
    headers = dict(encode_headers("frame-0001", NOW, "image/jpeg"))
    for name, value in replace.items():
        headers[name.replace("_", "-")] = value
    return [(name, value) for name, value in headers.items() if value is not None]


def test_good_headers_round_trip_exactly() -> None:
    meta = FrameHeaders.from_kafka(b"cam1", good_headers())
    assert meta == FrameHeaders(
        camera="cam1", frame_id="frame-0001", capture_ts=NOW, content_type="image/jpeg", schema_version="1"
    )
    assert meta.capture_ts == NOW  # repr() text reads back as the same float
    assert FrameHeaders.from_kafka(meta.kafka_key(), meta.kafka_headers()) == meta


def test_unrelated_headers_are_ignored() -> None:
    headers = [("traceparent", b"00-abc"), ("gateway", None), *good_headers()]
    assert FrameHeaders.from_kafka(b"line-2.cam:7", headers).camera == "line-2.cam:7"


def test_bad_headers_is_a_zsad_error_with_reason() -> None:
    with pytest.raises(BadHeadersError) as info:
        FrameHeaders.from_kafka(b"cam1", [])
    assert isinstance(info.value, ZsadError)
    assert info.value.reason == "bad_headers"


@pytest.mark.parametrize("missing", [H_FRAME_ID, H_CAPTURE_TS, H_CONTENT_TYPE, H_SCHEMA])
def test_missing_header_is_named(missing: str) -> None:
    headers = [(name, value) for name, value in good_headers() if name != missing]
    with pytest.raises(BadHeadersError, match=missing):
        FrameHeaders.from_kafka(b"cam1", headers)


@pytest.mark.parametrize(
    ("key", "replace", "match"),
    [
        (None, {}, "no key"),
        (b"", {}, "no key"),
        (b"cam{1}", {}, "key"),
        (b"c" * 65, {}, "key"),
        (b"\xff\xfe", {}, "UTF-8"),
        (b"cam1", {"zsad_frame_id": b""}, H_FRAME_ID),
        (b"cam1", {"zsad_frame_id": b"a/b"}, H_FRAME_ID),
        (b"cam1", {"zsad_frame_id": b"f" * 129}, H_FRAME_ID),
        (b"cam1", {"zsad_frame_id": b"\xc3\x28"}, "UTF-8"),
        (b"cam1", {"zsad_capture_ts": b"yesterday"}, "not a number"),
        (b"cam1", {"zsad_capture_ts": b"nan"}, "finite"),
        (b"cam1", {"zsad_capture_ts": b"inf"}, H_CAPTURE_TS),
        (b"cam1", {"zsad_capture_ts": b"-5"}, H_CAPTURE_TS),
        (b"cam1", {"zsad_capture_ts": str(time.time() * 1000).encode()}, "future"),
        (b"cam1", {"zsad_content_type": b"image/gif"}, H_CONTENT_TYPE),
        (b"cam1", {"zsad_schema": b"2"}, "not supported"),
    ],
)
def test_garbled_headers_are_refused(key: bytes | None, replace: dict[str, bytes], match: str) -> None:
    with pytest.raises(BadHeadersError, match=match):
        FrameHeaders.from_kafka(key, good_headers(**replace))


def test_repeated_header_is_refused() -> None:
    with pytest.raises(BadHeadersError, match="more than once"):
        FrameHeaders.from_kafka(b"cam1", [*good_headers(), (H_FRAME_ID, b"other")])


def test_create_validates_producer_input() -> None:
    assert FrameHeaders.create("cam1", "f1", NOW, "image/png").kafka_headers()[2] == (H_CONTENT_TYPE, b"image/png")
    with pytest.raises(BadHeadersError, match="key"):
        FrameHeaders.create("cam 1", "f1", NOW, "image/png")


def test_sniff_content_type() -> None:
    assert sniff_content_type(b"\xff\xd8\xff\xe0rest") == "image/jpeg"
    assert sniff_content_type(b"\x89PNG\r\n\x1a\nrest") == "image/png"
    with pytest.raises(ValueError, match="neither"):
        sniff_content_type(b"GIF89a")


def test_dead_letter_keeps_the_record_and_says_why() -> None:
    original = [("traceparent", b"00-abc"), *good_headers()]
    letter = DeadLetter.build(
        key=b"cam1",
        value=b"\xff\xd8\xff cut",
        headers=original,
        error=TruncatedImageError("JPEG payload has no end-of-image marker (truncated)"),
        source_topic="zsad.frames",
        partition=3,
        offset=41,
    )
    assert (letter.topic, letter.key, letter.value) == (DLQ_TOPIC, b"cam1", b"\xff\xd8\xff cut")
    assert letter.headers[: len(original)] == original
    assert letter.header(H_DLQ_REASON) == "truncated"
    assert letter.header(H_DLQ_SOURCE) == "zsad.frames:3:41"
    assert letter.header(H_DLQ_DETAIL) == "TruncatedImageError: JPEG payload has no end-of-image marker (truncated)"


def test_dead_letter_of_a_dead_letter_replaces_the_reason() -> None:
    first = DeadLetter.build(
        key=b"k", value=b"v", headers=good_headers(), error=ImageTooLargeError("big"),
        source_topic="zsad.frames", partition=0, offset=1,
    )  # fmt: skip
    second = DeadLetter.build(
        key=b"k", value=b"v", headers=first.headers, error=RuntimeError("boom"),
        source_topic=DLQ_TOPIC, partition=0, offset=9, dlq_topic="other.dlq",
    )  # fmt: skip
    assert [name for name, _ in second.headers].count(H_DLQ_REASON) == 1
    assert second.header(H_DLQ_REASON) == "unexpected"
    assert second.header(H_DLQ_SOURCE) == f"{DLQ_TOPIC}:0:9"
    assert second.topic == "other.dlq"


def test_dead_letter_detail_is_truncated_on_a_character_boundary() -> None:
    letter = DeadLetter.build(
        key=None, value=None, headers=None, error=ValueError("é" * 1000),
        source_topic="t", partition=0, offset=0,
    )  # fmt: skip
    raw = dict(letter.headers)[H_DLQ_DETAIL]
    assert len(raw) <= MAX_DETAIL_BYTES
    assert raw.decode("utf-8").endswith("...")


def test_reason_code_is_short_and_safe() -> None:
    class OddError(ZsadError):
        reason = "Weird Reason! " * 10

    assert reason_code(BadHeadersError("x")) == "bad_headers"
    code = reason_code(OddError())
    assert len(code) <= 32 and code.startswith("weird_reason_")
