"""The frame message contract between producers, the ingest actors and the dead-letter topic.

Why a module of its own: the producer, the ingest actors, the tests and any third-party camera gateway must
agree on the same bytes. A frame is one Kafka record:

* **key**: the camera id, UTF-8. Kafka's key hashing keeps one camera on one partition, so its frames stay in
  order, and the key doubles as the Redis hash tag of the camera's results.
* **value**: the encoded image exactly as the camera produced it (JPEG or PNG); nothing is wrapped around it,
  so any Kafka client can produce frames without this package.
* **headers**: the frame's metadata, ASCII text (see the ``H_*`` names below).

Headers are validated *before* the image is decoded; a record that fails validation is dead-lettered with the
reason ``bad_headers`` and never reaches a model. That includes the optional part identity headers: a part value
that is not short printable ASCII is refused rather than dropped, because a result stored without its part
could not be joined by the PLC or MES that asked for it. Headers that are not ours (tracing, gateway ids) are
ignored, so a gateway may add its own.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError, field_validator

from zsad_core.errors import ZsadError

FRAMES_TOPIC = "zsad.frames"
DLQ_TOPIC = "zsad.frames.dlq"

H_FRAME_ID = "zsad-frame-id"
H_CAPTURE_TS = "zsad-capture-ts"
H_CONTENT_TYPE = "zsad-content-type"
H_SCHEMA = "zsad-schema"
H_DLQ_REASON = "zsad-dlq-reason"
H_DLQ_DETAIL = "zsad-dlq-detail"
H_DLQ_SOURCE = "zsad-dlq-source"
H_DLQ_GROUP = "zsad-dlq-group"  # the consumer group that read the record (see letter_ledger)
H_DLQ_DROPPED = "zsad-dlq-value-dropped"  # the payload did not fit the dead-letter topic
# Optional part identity set by a gateway (services/gateway/part_identity.py), so a PLC or MES can join a decision
# to the part it was made on; ASCII text, absent when the source names no part.
H_PART_ID = "zsad-part-id"
H_PART_SERIAL = "zsad-part-serial"
H_PART_STATION = "zsad-part-station"

SCHEMA_VERSION = "1"
SUPPORTED_SCHEMAS = frozenset({SCHEMA_VERSION})
ContentType = Literal["image/jpeg", "image/png"]
CONTENT_TYPES: tuple[str, ...] = ("image/jpeg", "image/png")

# Ids end up inside Redis keys and Kafka headers: a closed alphabet keeps keys unambiguous (no braces, which
# would break the `{cam}` hash tag, no spaces or slashes) and lengths bound memory per key.
FRAME_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
CAMERA_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,64}$"
FrameId = Annotated[str, StringConstraints(pattern=FRAME_ID_PATTERN)]
CameraId = Annotated[str, StringConstraints(pattern=CAMERA_ID_PATTERN)]
# Part values are stored in result hashes and shown as they are: printable ASCII without spaces at either end
# (inner spaces are allowed, serials like "AB 1234" exist), at most 128 characters like a frame id.
MAX_PART_CHARS = 128
PART_VALUE_PATTERN = r"^[!-~](?:[ -~]{0,126}[!-~])?$"
PartValue = Annotated[str, StringConstraints(pattern=PART_VALUE_PATTERN)]

# Camera clocks drift; an hour is generous for NTP-less devices, while a timestamp days ahead is a bug (ms
# instead of s) that would poison capture-to-Redis latency metrics.
MAX_FUTURE_SKEW_S = 3600.0
# Longest dead-letter detail, in bytes: enough for an exception message, small next to the frame itself.
MAX_DETAIL_BYTES = 512

Headers = list[tuple[str, bytes]]
# Error messages name what the producer wrote (the header), not our field names.
_HEADER_OF_FIELD = {
    "camera": "key",
    "frame_id": H_FRAME_ID,
    "capture_ts": H_CAPTURE_TS,
    "content_type": H_CONTENT_TYPE,
    "schema_version": H_SCHEMA,
    "part_id": H_PART_ID,
    "part_serial": H_PART_SERIAL,
    "part_station": H_PART_STATION,
}
_REASON_CHARS = re.compile(r"[^a-z0-9_]+")


class BadHeadersError(ZsadError, ValueError):
    """A frame's key or headers break the contract; the record is dead-lettered, never decoded."""

    reason = "bad_headers"


class FrameHeaders(BaseModel):
    """The validated metadata of one frame (its Kafka key plus our headers).

    Attributes:
        camera: camera id from the record key.
        frame_id: unique per camera; the idempotency key of the result in Redis.
        capture_ts: seconds since the epoch when the camera took the frame.
        content_type: ``image/jpeg`` or ``image/png``.
        schema_version: version of this contract; only :data:`SUPPORTED_SCHEMAS` are accepted.
        part_id, part_serial, part_station: the part the frame shows, when its gateway named one
            (:data:`PART_VALUE_PATTERN`); ``None`` when the header is absent.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    camera: CameraId
    frame_id: FrameId
    capture_ts: float
    content_type: ContentType
    schema_version: str
    part_id: PartValue | None = None
    part_serial: PartValue | None = None
    part_station: PartValue | None = None

    @field_validator("capture_ts")
    @classmethod
    def _plausible_time(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"capture timestamp must be finite and non-negative, got {value}")
        if value > time.time() + MAX_FUTURE_SKEW_S:
            raise ValueError(f"capture timestamp {value} is more than {MAX_FUTURE_SKEW_S:.0f} s in the future")
        return value

    @field_validator("schema_version")
    @classmethod
    def _supported_schema(cls, value: str) -> str:
        if value not in SUPPORTED_SCHEMAS:
            raise ValueError(f"schema {value!r} is not supported (supported: {sorted(SUPPORTED_SCHEMAS)})")
        return value

    @classmethod
    def from_kafka(cls, key: bytes | None, headers: Iterable[tuple[str, bytes | None]] | None) -> FrameHeaders:
        """Validate a record's key and headers.

        Args:
            key: the record key (camera id, UTF-8).
            headers: the record headers as kafka-python gives them, ``[(name, value_bytes), ...]``.

        Raises:
            BadHeadersError: a header is missing, repeated, not UTF-8 or invalid; the message says which.
        """
        if not key:
            raise BadHeadersError("record has no key (the camera id)")
        ours = _our_headers(headers or ())
        missing = [name for name in (H_FRAME_ID, H_CAPTURE_TS, H_CONTENT_TYPE, H_SCHEMA) if name not in ours]
        if missing:
            raise BadHeadersError(f"missing header(s) {missing}")
        try:
            return cls(
                camera=_text(key, "key"),
                frame_id=ours[H_FRAME_ID],
                capture_ts=_timestamp(ours[H_CAPTURE_TS]),
                content_type=ours[H_CONTENT_TYPE],
                schema_version=ours[H_SCHEMA],
                part_id=ours.get(H_PART_ID),
                part_serial=ours.get(H_PART_SERIAL),
                part_station=ours.get(H_PART_STATION),
            )
        except ValidationError as exc:
            raise BadHeadersError(_summarise(exc)) from None

    @classmethod
    def create(cls, camera: str, frame_id: str, capture_ts: float, content_type: str) -> FrameHeaders:
        """Validated metadata for a new frame (producer side), current schema version.

        Raises:
            BadHeadersError: an id, the timestamp or the content type breaks the contract.
        """
        try:
            return cls(
                camera=camera,
                frame_id=frame_id,
                capture_ts=capture_ts,
                content_type=content_type,
                schema_version=SCHEMA_VERSION,
            )
        except ValidationError as exc:
            raise BadHeadersError(_summarise(exc)) from None

    def kafka_key(self) -> bytes:
        """The record key: the camera id as UTF-8."""
        return self.camera.encode()

    def kafka_headers(self) -> Headers:
        """The record headers of this frame, part identity included when set."""
        parts = [(name, value.encode("ascii")) for name, value in
                 ((H_PART_ID, self.part_id), (H_PART_SERIAL, self.part_serial), (H_PART_STATION, self.part_station))
                 if value is not None]  # fmt: skip
        return encode_headers(self.frame_id, self.capture_ts, self.content_type, self.schema_version) + parts


def encode_headers(
    frame_id: str,
    capture_ts: float,
    content_type: ContentType | str,
    schema_version: str = SCHEMA_VERSION,
) -> Headers:
    """Headers for a producer, in kafka-python's ``[(name, bytes)]`` form.

    The timestamp is written with ``repr`` so it reads back as exactly the same float.
    """
    return [
        (H_FRAME_ID, frame_id.encode()),
        (H_CAPTURE_TS, repr(float(capture_ts)).encode()),
        (H_CONTENT_TYPE, content_type.encode()),
        (H_SCHEMA, schema_version.encode()),
    ]


def new_frame_id() -> str:
    """A fresh frame id (32 hex digits), for producers whose camera supplies none."""
    return uuid.uuid4().hex


def sniff_content_type(data: bytes) -> ContentType:
    """The content type of encoded image bytes, from their magic number.

    Raises:
        ValueError: the bytes are neither JPEG nor PNG.
    """
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    raise ValueError("payload is neither JPEG nor PNG; pass content_type explicitly to send it anyway")


def _our_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    ours: dict[str, str] = {}
    for name, value in headers:
        if not name.startswith("zsad-"):
            continue
        if name in ours:
            # Two values for one field: no rule says which one the camera meant.
            raise BadHeadersError(f"header {name!r} appears more than once")
        ours[name] = _text(value or b"", name)
    return ours


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeadersError(f"{what} is not valid UTF-8") from None


def _timestamp(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise BadHeadersError(f"header {H_CAPTURE_TS!r} is not a number: {text[:40]!r}") from None


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else "headers"
        parts.append(f"{_HEADER_OF_FIELD.get(field, field)}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class DeadLetter:
    """A record for the dead-letter topic: the original key and value, the original headers plus why.

    The value is kept byte for byte so that an operator can replay the frame after fixing the cause.

    Attributes:
        topic: the dead-letter topic.
        key, value: the original record's key and value.
        headers: the original headers (without earlier ``zsad-dlq-*`` ones) plus reason, detail and source.
    """

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers

    @classmethod
    def build(
        cls,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes | None]] | None,
        error: BaseException,
        source_topic: str,
        partition: int,
        offset: int,
        dlq_topic: str = DLQ_TOPIC,
        group: str | None = None,
    ) -> DeadLetter:
        """Dead-letter a record that failed with ``error``.

        Args:
            key, value, headers: the original record's.
            error: why it failed; a :class:`ZsadError` gives its ``reason``, anything else gives ``unexpected``.
            source_topic, partition, offset: where the record was read, for replay and audit.
            dlq_topic: the dead-letter topic.
            group: the consumer group that read it, when a group did.
        """
        kept = [(name, raw or b"") for name, raw in headers or () if not name.startswith("zsad-dlq-")]
        kept += [
            (H_DLQ_REASON, reason_code(error).encode()),
            (H_DLQ_DETAIL, _truncate(f"{type(error).__name__}: {error}", MAX_DETAIL_BYTES)),
            (H_DLQ_SOURCE, f"{source_topic}:{partition}:{offset}".encode()),
        ]
        if group is not None:
            kept.append((H_DLQ_GROUP, group.encode()))
        return cls(topic=dlq_topic, key=key, value=value, headers=kept)

    def header(self, name: str) -> str | None:
        """The text of the last header called ``name`` (``None`` if absent)."""
        values = [raw for header_name, raw in self.headers if header_name == name]
        return values[-1].decode("utf-8", "replace") if values else None


def reason_code(error: BaseException) -> str:
    """A short ``[a-z0-9_]`` code for a failure: the error's ``reason`` if it is a :class:`ZsadError`."""
    raw = error.reason if isinstance(error, ZsadError) else "unexpected"
    code = _REASON_CHARS.sub("_", str(raw).lower()).strip("_")[:32]
    return code or "unexpected"


def _truncate(text: str, limit: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= limit:
        return data
    # Cut on a character boundary so the header stays valid UTF-8 for any consumer.
    return data[: limit - 3].decode("utf-8", "ignore").encode() + b"..."
