"""Which part a frame shows: serial number, part id and station, from the file name or a sidecar JSON.

Why: a decision is only useful to a PLC or MES that can join it to the part it was made on. Vision PCs name
that part in the image's file name (``SN1234_ST2.png``) or write a small JSON file next to the image; the
gateway carries it as the optional record headers ``zsad-part-id``, ``zsad-part-serial`` and
``zsad-part-station`` (:mod:`services.records`).

* **File name**: a regular expression with named groups ``part_id``, ``serial`` and/or ``station``, matched
  against the file name (``--part-pattern '(?P<serial>[A-Z0-9]+)_(?P<station>ST[0-9]+)'``). A name that does
  not match carries no identity; that is not an error, since the same folder may hold test shots.
* **Sidecar**: ``<stem>.json`` next to the image (``SN1234.png`` -> ``SN1234.json``) holding any of the three
  keys as strings. Write it *before* the image (or rename the image into place last). Its values win over
  the file name's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

from services.records import H_PART_ID, H_PART_SERIAL, H_PART_STATION, MAX_PART_CHARS, PART_VALUE_PATTERN
from zsad_core.errors import ZsadError

SIDECAR_SUFFIX = ".json"
MAX_VALUE_CHARS = MAX_PART_CHARS
# The record contract's rule (printable ASCII, no spaces at the ends): ingest refuses a record that breaks it.
_VALUE = re.compile(PART_VALUE_PATTERN)
_HEADERS = {"part_id": H_PART_ID, "serial": H_PART_SERIAL, "station": H_PART_STATION}


class BadPartIdentityError(ZsadError, ValueError):
    """A sidecar is not valid JSON, or a part value is not short printable ASCII."""

    reason = "bad_part_identity"


@dataclass(frozen=True)
class PartIdentity:
    """The part a frame shows; every field is optional.

    Attributes:
        part_id: the MES's id of the part.
        serial: the part's serial number.
        station: the station (or fixture) that took the picture.
    """

    part_id: str | None = None
    serial: str | None = None
    station: str | None = None

    def headers(self) -> list[tuple[str, bytes]]:
        """The record headers of the fields that are set."""
        return [(_HEADERS[name], value.encode("ascii")) for name, value in self._items()]

    def merged(self, other: PartIdentity) -> PartIdentity:
        """This identity with ``other``'s set fields taking precedence."""
        return PartIdentity(**{**dict(self._items()), **dict(other._items())})

    def _items(self) -> list[tuple[str, str]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


def compile_part_pattern(pattern: str) -> re.Pattern[str]:
    """A ``--part-pattern``; it must compile and name at least one of the known groups.

    Raises:
        BadPartIdentityError: the message names the pattern and what is wrong with it.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise BadPartIdentityError(f"part pattern {pattern!r} is not a regular expression: {exc}") from None
    unknown = set(compiled.groupindex) - set(_HEADERS)
    if not compiled.groupindex or unknown:
        raise BadPartIdentityError(
            f"part pattern {pattern!r} must name groups among {sorted(_HEADERS)} (unknown: {sorted(unknown)})"
        )
    return compiled


def identity_from_name(name: str, pattern: re.Pattern[str] | None) -> PartIdentity:
    """The identity in a file name (empty when there is no pattern or it does not match)."""
    match = pattern.search(name) if pattern is not None else None
    if match is None:
        return PartIdentity()
    return _checked({key: value for key, value in match.groupdict().items() if value}, name)


def sidecar_path(image: Path) -> Path:
    """Where an image's sidecar is expected."""
    return image.with_suffix(SIDECAR_SUFFIX)


def identity_from_sidecar(path: Path) -> PartIdentity:
    """The identity in a sidecar file (empty when there is none).

    Raises:
        BadPartIdentityError: the file is not a JSON object of known keys with string values.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return PartIdentity()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadPartIdentityError(f"part sidecar {path} cannot be read as JSON: {exc}") from None
    if not isinstance(document, dict) or set(document) - set(_HEADERS):
        raise BadPartIdentityError(f"part sidecar {path} must be an object with keys among {sorted(_HEADERS)}")
    if not all(isinstance(value, str) for value in document.values()):
        raise BadPartIdentityError(f"part sidecar {path}: values must be strings")
    return _checked(document, str(path))


def _checked(values: dict[str, str], where: str) -> PartIdentity:
    for key, value in values.items():
        if len(value) > MAX_VALUE_CHARS or not _VALUE.match(value):
            raise BadPartIdentityError(
                f"{where}: part {key} {value[:40]!r} is not printable ASCII of at most {MAX_VALUE_CHARS} characters"
            )
    return PartIdentity(**values)
