"""Part identity from the record headers to what readers show: validated at ingest, carried, displayed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_frame_decoding import Record

from services.cli.cmd_results import format_table, part_label
from services.config import CameraConfig
from services.frame_path.decode_budget import DecodeBudget
from services.frame_path.decoding import decode_record
from services.gateway.part_identity import BadPartIdentityError, PartIdentity, identity_from_name
from services.read_models import part_of
from services.records import (
    H_PART_ID,
    H_PART_SERIAL,
    H_PART_STATION,
    MAX_PART_CHARS,
    BadHeadersError,
    DeadLetter,
    FrameHeaders,
    encode_headers,
)
from services.stores.result_store import StoredResult
from zsad_core.imageio import DEFAULT_LIMITS, encode_png

NOW = 1_767_000_000.0
PARTS = [(H_PART_ID, b"P-0042"), (H_PART_SERIAL, b"SN 1234"), (H_PART_STATION, b"ST2")]


def test_part_headers_are_read_with_the_frame() -> None:
    meta = FrameHeaders.from_kafka(b"cam1", encode_headers("f1", NOW, "image/png") + PARTS)
    assert (meta.part_id, meta.part_serial, meta.part_station) == ("P-0042", "SN 1234", "ST2")
    assert FrameHeaders.from_kafka(b"cam1", meta.kafka_headers()) == meta  # and written back the same


def test_a_frame_without_part_headers_names_no_part() -> None:
    meta = FrameHeaders.from_kafka(b"cam1", encode_headers("f1", NOW, "image/png"))
    assert (meta.part_id, meta.part_serial, meta.part_station) == (None, None, None)
    assert not [name for name, _ in meta.kafka_headers() if name.startswith("zsad-part-")]


@pytest.mark.parametrize(
    "value",
    [b"", b" SN1", b"SN1 ", b"S\tN", "Sérial".encode(), b"x" * (MAX_PART_CHARS + 1), b"\xff\xfe"],
    ids=["empty", "leading-space", "trailing-space", "tab", "non-ascii", "too-long", "not-utf8"],
)
def test_a_bad_part_header_dead_letters_the_record_as_bad_headers(value: bytes) -> None:
    headers = [*encode_headers("f1", NOW, "image/png"), (H_PART_SERIAL, value)]
    with pytest.raises(BadHeadersError) as caught:
        FrameHeaders.from_kafka(b"cam1", headers)
    assert "\n" not in str(caught.value)
    letter = DeadLetter.build(key=b"cam1", value=b"", headers=headers, error=caught.value, source_topic="frames",
                              partition=0, offset=1)  # fmt: skip
    assert letter.header("zsad-dlq-reason") == "bad_headers"


def test_the_longest_part_value_is_accepted() -> None:
    value = "A" * MAX_PART_CHARS
    meta = FrameHeaders.from_kafka(b"cam1", [*encode_headers("f1", NOW, "image/png"), (H_PART_ID, value.encode())])
    assert meta.part_id == value


def test_a_repeated_part_header_is_refused() -> None:
    headers = [*encode_headers("f1", NOW, "image/png"), (H_PART_ID, b"a"), (H_PART_ID, b"b")]
    with pytest.raises(BadHeadersError, match="more than once"):
        FrameHeaders.from_kafka(b"cam1", headers)


def test_what_the_gateway_accepts_ingest_accepts_and_the_reverse() -> None:
    pattern = re.compile(r"(?P<serial>[^_]+)_(?P<station>[^.]+)")
    identity = identity_from_name("SN 77_ST-3.png", pattern)
    meta = FrameHeaders.from_kafka(b"cam1", encode_headers("f1", NOW, "image/png") + identity.headers())
    assert (meta.part_serial, meta.part_station) == ("SN 77", "ST-3")
    with pytest.raises(BadPartIdentityError):
        identity_from_name("Sérial_ST3.png", pattern)
    assert PartIdentity(part_id="x" * MAX_PART_CHARS).headers()[0][1] == b"x" * MAX_PART_CHARS


def test_decoding_carries_the_part_into_the_request() -> None:
    camera = CameraConfig(method="clip-ad", class_name="bottle", threshold=0.5, image_size=32)
    payload = encode_png(np.zeros((40, 48, 3), np.uint8))
    record = Record(b"cam1", payload, encode_headers("f1", NOW, "image/png") + PARTS)
    request = decode_record(record, {"cam1": camera}, DEFAULT_LIMITS, input_sizes={"cam1": 32},
                            budget=DecodeBudget(10**8))  # fmt: skip
    assert (request.part_id, request.part_serial, request.part_station) == ("P-0042", "SN 1234", "ST2")


def _stored(**fields: str) -> StoredResult:
    base = {"camera": "cam1", "frame_id": "f1", "score": "0.7", "label": "1", "threshold": "0.5",
            "method": "clip-ad", "partition": "0", "offset": "3", "capture_ts": "0.0", "infer_ts": "1.0",
            "write_ts": "1.1"}  # fmt: skip
    return StoredResult.from_fields({**base, **fields})


def test_stored_results_read_their_part_and_older_results_have_none() -> None:
    stored = _stored(part_id="P-0042", part_serial="SN 1234", part_station="ST2")
    assert (stored.part_id, stored.part_serial, stored.part_station) == ("P-0042", "SN 1234", "ST2")
    older = _stored()  # written before parts were stored
    assert (older.part_id, older.part_serial, older.part_station) == (None, None, None)
    assert _stored(part_id="", part_serial="", part_station="").part_id is None  # written without a part


def test_the_results_table_shows_the_part() -> None:
    assert part_label(_stored(part_id="P-0042", part_serial="SN1234", part_station="ST2")) == "SN1234/P-0042@ST2"
    assert part_label(_stored(part_serial="SN1234")) == "SN1234"
    assert part_label(_stored()) == "-"
    header, row = format_table([_stored(part_serial="SN1234", part_station="ST2")]).splitlines()
    assert header.split()[9] == "PART" and row.split()[9] == "SN1234@ST2"


def test_the_view_and_the_client_name_only_the_parts_that_are_set() -> None:
    assert part_of({"part_serial": "SN1", "part_id": "", "part_station": "ST2", "score": "0.1"}) == {
        "part_serial": "SN1",
        "part_station": "ST2",
    }
    assert part_of({"score": "0.1"}) == {}
