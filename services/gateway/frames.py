"""What a source hands to the sender: one frame ready for Kafka, and what became of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from services.records import ContentType


@dataclass(frozen=True)
class GatewayFrame:
    """One encoded frame with the metadata of its record.

    Attributes:
        camera: camera id (the record key).
        frame_id: stable for what the source holds, so a resend after a crash is the same frame.
        capture_ts: seconds since the epoch when the frame was taken.
        payload: the encoded JPEG or PNG.
        content_type: ``image/jpeg`` or ``image/png``.
        extra_headers: headers after the contract's (part identity).
    """

    camera: str
    frame_id: str
    capture_ts: float
    payload: bytes
    content_type: ContentType
    extra_headers: tuple[tuple[str, bytes], ...] = ()


class Outcome(Enum):
    """What the sender did with a frame, told to the source that submitted it."""

    ACKNOWLEDGED = "acknowledged"  # the broker has it (acks=all): the source may forget it
    REFUSED = "refused"  # the spool was full: the frame was not kept; a folder offers the file again later


OutcomeCallback = Callable[[GatewayFrame, Outcome], None]
# How a source hands a frame over: the frame and, when the source must know, the callback told its outcome.
Submit = Callable[[GatewayFrame, OutcomeCallback | None], None]
