"""Operator marks: which stored results a person confirmed as good or bad.

Why: a camera's own recent frames are the best calibration data (its lighting, its product variants), but only
once someone has said which of them were good. Marks live next to the results under the camera's hash tag:
``zsad:{cam}:marked:good`` and ``zsad:{cam}:marked:bad`` are sorted sets of frame ids by marking time, so
"the newest N goods" is one ZREVRANGE, and re-marking a frame moves it from one set to the other atomically.
"""

from __future__ import annotations

import re
import time

import redis

from services.config import ZsadConfig
from services.records import CAMERA_ID_PATTERN, FRAME_ID_PATTERN
from services.stores.result_store import camera_prefix, result_key
from zsad_core.errors import ZsadError

MARK_LABELS = ("good", "bad")
_CAMERA_RE = re.compile(CAMERA_ID_PATTERN)
_FRAME_RE = re.compile(FRAME_ID_PATTERN)


class MarkError(ZsadError, ValueError):
    """A mark that cannot be recorded: bad label or id, or no stored result for the frame."""

    reason = "bad_mark"


def marks_key(camera: str, label: str) -> str:
    """The sorted set of the frames of ``camera`` marked ``label``."""
    return f"{camera_prefix(camera)}:marked:{label}"


def mark_frame(client: redis.Redis, camera: str, frame_id: str, label: str, *, at: float | None = None) -> None:
    """Record that an operator marked ``frame_id`` of ``camera`` as ``label`` (``good`` or ``bad``).

    Raises:
        MarkError: unknown label, malformed ids, or the frame has no stored result (expired or never scored).
    """
    if label not in MARK_LABELS:
        raise MarkError(f"a mark is one of {list(MARK_LABELS)}, got {label!r}")
    if not _CAMERA_RE.match(camera) or not _FRAME_RE.match(frame_id):
        raise MarkError(f"malformed camera or frame id: {camera!r} {frame_id!r}")
    if not client.exists(result_key(camera, frame_id)):
        raise MarkError(f"{camera} has no stored result for frame {frame_id!r} (never scored, or expired)")
    other = next(name for name in MARK_LABELS if name != label)
    with client.pipeline(transaction=True) as pipe:
        pipe.zrem(marks_key(camera, other), frame_id)
        pipe.zadd(marks_key(camera, label), {frame_id: time.time() if at is None else at})
        pipe.execute()


def marked_frames(client: redis.Redis, camera: str, label: str, n: int) -> list[str]:
    """The ``n`` most recently marked frames of ``camera`` with ``label``, newest first."""
    if label not in MARK_LABELS:
        raise MarkError(f"a mark is one of {list(MARK_LABELS)}, got {label!r}")
    return [v.decode() if isinstance(v, bytes) else v for v in client.zrevrange(marks_key(camera, label), 0, n - 1)]


def read_marked_frames(config: ZsadConfig, camera: str, label: str, n: int) -> list[tuple[str, bytes]]:
    """The newest ``n`` frames of ``camera`` marked ``label``, read back from Kafka as produced: ``(frame id, bytes)``.

    Why one reader: calibration and reference sets both learn from the frames an operator confirmed; frames whose
    result or Kafka record has expired since the mark are skipped (the callers decide whether none is an error).
    """
    from services.stores.frame_readback import FrameUnavailableError, fetch_frame
    from services.stores.result_store import ResultStore

    store = ResultStore.from_config(config)
    frames = []
    try:
        for frame_id in marked_frames(store.client, camera, label, n):
            result = store.get_result(camera, frame_id)
            if result is None:
                continue
            try:
                frames.append((frame_id, fetch_frame(config.kafka, result.partition, result.offset, frame_id,
                                                     camera=camera)))  # fmt: skip
            except FrameUnavailableError:
                continue
    finally:
        store.close()
    return frames
