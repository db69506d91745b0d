"""Part identity from file names and sidecars, and the headers it becomes."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.gateway.part_identity import (
    BadPartIdentityError,
    PartIdentity,
    compile_part_pattern,
    identity_from_name,
    identity_from_sidecar,
    sidecar_path,
)
from services.records import H_PART_ID, H_PART_SERIAL, H_PART_STATION

PATTERN = compile_part_pattern(r"^(?P<serial>SN[0-9]+)_(?P<station>ST[0-9]+)")


def test_a_file_name_gives_serial_and_station_headers() -> None:
    part = identity_from_name("SN1234_ST2_top.png", PATTERN)
    assert part == PartIdentity(serial="SN1234", station="ST2")
    assert part.headers() == [(H_PART_SERIAL, b"SN1234"), (H_PART_STATION, b"ST2")]


def test_a_name_that_does_not_match_carries_no_identity() -> None:
    assert identity_from_name("test-shot.png", PATTERN).headers() == []
    assert identity_from_name("SN1_ST1.png", None) == PartIdentity()


def test_the_sidecar_wins_over_the_name(tmp_path: Path) -> None:
    image = tmp_path / "SN1234_ST2.png"
    sidecar_path(image).write_text('{"part_id": "A-77", "station": "ST9"}')
    part = identity_from_name(image.name, PATTERN).merged(identity_from_sidecar(sidecar_path(image)))
    assert part.headers() == [(H_PART_ID, b"A-77"), (H_PART_SERIAL, b"SN1234"), (H_PART_STATION, b"ST9")]


def test_a_missing_sidecar_is_no_identity(tmp_path: Path) -> None:
    assert identity_from_sidecar(tmp_path / "absent.json") == PartIdentity()


@pytest.mark.parametrize("text", ["{not json", '["a"]', '{"colour": "red"}', '{"serial": 5}',
                                  '{"serial": "with\\nnewline"}', '{"serial": "' + "x" * 200 + '"}'])  # fmt: skip
def test_a_bad_sidecar_is_refused_naming_the_file(tmp_path: Path, text: str) -> None:
    sidecar = tmp_path / "part.json"
    sidecar.write_text(text)
    with pytest.raises(BadPartIdentityError, match="part"):
        identity_from_sidecar(sidecar)


@pytest.mark.parametrize("pattern", ["(unclosed", "no-groups", "(?P<colour>red)"])
def test_a_pattern_must_compile_and_name_known_groups(pattern: str) -> None:
    with pytest.raises(BadPartIdentityError, match="part pattern"):
        compile_part_pattern(pattern)
