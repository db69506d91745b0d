"""What the web view's pages and the Python client show, read from Redis and Kafka, tolerant of unknown fields.

Why a module beside the view and not inside it: :mod:`services.client` reads and renders results the same way,
and an integration's client must not load the web application.

Why raw hashes and not :class:`~services.stores.result_store.StoredResult`: results gain fields over time
(``decision``, ``regions``, versions); the view shows what a hash holds and draws what it understands, so a
result written by an older or newer inspector still renders.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from threading import Lock

import cv2
import numpy as np
import redis
from markupsafe import Markup, escape

from services.config import ZsadConfig
from services.records import FRAME_ID_PATTERN
from services.stores.camera_settings import CameraSettings, CameraSettingsStore
from services.stores.event_windows import EventWindow, read_event_windows
from services.stores.frame_readback import FrameUnavailableError, fetch_frame
from services.stores.result_store import ResultStore, result_key, roi_of
from zsad_core.errors import ZsadError
from zsad_core.imageio import decode_image, encode_png
from zsad_core.visualize import overlay

RECENT_WINDOW = 500  # events the overview's rates and percentiles are computed over
RATE_WINDOW_S = 60.0
HIDDEN_FIELDS = ("digest", "map_min", "map_scale")
_FRAME_RE = re.compile(FRAME_ID_PATTERN)
_BOX_COLOR = (255, 0, 255)


def time_element(value: object) -> Markup:
    """A ``<time>`` element for a Unix time (``capture_ts``) or an ISO 8601 string (``created_at``).

    Why: the page shows it in UTC as ISO 8601, and base.html's script rewrites every ``time[datetime]`` to
    ISO 8601 in the browser's time zone, so the operator reads local times and never raw epoch seconds. A value
    that is neither (``0``: never set, or text) is shown as it is.
    """
    moment: dt.datetime | None = None
    if isinstance(value, int | float | str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                moment = dt.datetime.fromisoformat(str(value))
            except ValueError:
                moment = None
            if moment is not None and moment.tzinfo is None:
                moment = moment.replace(tzinfo=dt.UTC)
        else:
            if seconds > 0 and seconds < 1e11:  # 0 means never set; past year 5138 is not a time
                moment = dt.datetime.fromtimestamp(seconds, dt.UTC)
    if moment is None:
        return escape(str(value))
    utc = moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Markup('<time datetime="{0}" title="{0}">{0}</time>').format(utc)


class ResultMissingError(ZsadError, LookupError):
    """No stored result (or map) for the frame: never scored, expired, or a malformed id (HTTP 404)."""

    reason = "result_missing"


def text_fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A result hash or event entry as ``str -> str``, without the fields only the store needs."""

    def text(value: bytes | str) -> str:
        return value.decode(errors="replace") if isinstance(value, bytes) else value

    return {text(k): text(v) for k, v in raw.items() if text(k) not in HIDDEN_FIELDS}


PART_FIELDS = ("part_serial", "part_id", "part_station")


def part_of(fields: Mapping[str, str]) -> dict[str, str]:
    """The part a result names (``part_serial``, ``part_id``, ``part_station`` that are set), for the line's PLC or
    MES to join the decision on; empty when its frame named none."""
    return {name: fields[name] for name in PART_FIELDS if fields.get(name)}


def decision_of(fields: Mapping[str, str]) -> str:
    """The stored ``decision`` (``pass`` or ``reject``), else the same word from the label (results written before
    decisions existed)."""
    if fields.get("decision"):
        return fields["decision"]
    return "reject" if fields.get("label") == "1" else "pass"


def boxes_of(fields: Mapping[str, str]) -> list[tuple[int, int, int, int]]:
    """``(x, y, w, h)`` of each region in ``regions`` (rows ``[x, y, w, h, ...]``); none when absent or unreadable."""
    try:
        rows = json.loads(fields.get("regions") or "[]")
    except ValueError:
        return []
    boxes = []
    for row in rows if isinstance(rows, list) else []:
        if isinstance(row, list) and len(row) >= 4 and all(isinstance(v, int | float) for v in row[:4]):
            boxes.append((int(row[0]), int(row[1]), int(row[2]), int(row[3])))
    return boxes


def _number(fields: Mapping[str, str], name: str) -> float | None:
    try:
        return float(fields[name])
    except (KeyError, ValueError):
        return None


class CameraState(StrEnum):
    """What a camera needs from the operator, one state per camera (:func:`camera_state` says which wins)."""

    ANOMALOUS = "anomalous"  # its newest result was a reject
    ERRORING = "erroring"  # its gateway is configured and not running (stopped, dead, or cannot reach Redis)
    STALE = "stale"  # not paused, and no result for STALE_AFTER_S (or never)
    PAUSED = "paused"
    RUNNING = "running"


# The overview's order: cameras needing attention first, defects before faults before idleness.
ATTENTION_ORDER = (CameraState.ANOMALOUS, CameraState.ERRORING, CameraState.STALE, CameraState.PAUSED,
                   CameraState.RUNNING)  # fmt: skip
STALE_AFTER_S = RATE_WINDOW_S
PAGE_SIZE = 50


@dataclass(frozen=True)
class CameraRow:
    """One camera on the overview; rates and latencies over the newest :data:`RECENT_WINDOW` events."""

    camera: str
    method: str
    prompt_version: str
    threshold: float
    calibration: str
    paused: bool
    frames_per_s: float
    anomaly_rate: float
    p95_latency_ms: float
    last_frame_age_s: float | None
    stored: int
    state: str


def camera_state(
    settings: CameraSettings, newest_rejected: bool, last_frame_age_s: float | None, gateway_state: str | None
) -> CameraState:
    """The camera's state: a failing gateway first (whatever else), then a pause (it explains the silence), then
    silence (a reject minutes old is no longer news), then the newest decision."""
    if gateway_state is not None and gateway_state != "running":
        return CameraState.ERRORING
    if settings.paused:
        return CameraState.PAUSED
    if last_frame_age_s is None or last_frame_age_s > STALE_AFTER_S:
        return CameraState.STALE
    return CameraState.ANOMALOUS if newest_rejected else CameraState.RUNNING


def camera_row(
    camera: str, window: EventWindow, settings: CameraSettings, method: str, gateway_state: str | None, now: float
) -> CameraRow:
    """The overview numbers of ``camera`` from its newest events (``settings``: its current camera settings;
    ``gateway_state``: its gateway's, ``None`` when it has none configured)."""
    written = [t for t in window.write_ts if t is not None]
    latencies = [(w - c) * 1000.0 for w, c in zip(window.write_ts, window.capture_ts, strict=True) if w and c]
    recent = sum(1 for t in written if now - t <= RATE_WINDOW_S)
    last_frame_age_s = now - max(written) if written else None
    events = len(window.rejected)
    return CameraRow(
        camera=camera,
        method=window.newest.get("method") or method,
        prompt_version=window.newest.get("prompt_version") or (settings.prompt_version or "zero-shot"),
        threshold=settings.threshold,
        calibration=settings.calibration or "",
        paused=settings.paused,
        frames_per_s=recent / RATE_WINDOW_S,
        anomaly_rate=sum(window.rejected) / events if events else 0.0,
        p95_latency_ms=float(np.percentile(latencies, 95)) if latencies else 0.0,
        last_frame_age_s=last_frame_age_s,
        stored=window.stored,
        state=camera_state(settings, bool(window.rejected) and window.rejected[0], last_frame_age_s, gateway_state),
    )


def read_camera_rows(
    client: redis.Redis,
    settings: CameraSettingsStore,
    config: ZsadConfig,
    gateway_states: Mapping[str, str],
    now: float | None = None,
) -> list[CameraRow]:
    """Every configured camera's row, cameras needing attention first (:data:`ATTENTION_ORDER`, then as
    configured), read in a fixed number of round trips whatever the number of cameras.

    Args:
        gateway_states: the state of each configured gateway, by camera.
    """
    now = time.time() if now is None else now
    cameras = list(config.cameras)
    current = settings.settings_of(cameras)
    windows = read_event_windows(client, cameras, RECENT_WINDOW)
    rows = [camera_row(camera, windows[camera], current[camera], config.cameras[camera].method,
                       gateway_states.get(camera), now) for camera in cameras]  # fmt: skip
    return sorted(rows, key=lambda row: ATTENTION_ORDER.index(CameraState(row.state)))


@dataclass(frozen=True)
class OverviewSummary:
    """The whole line in one line: cameras by state and frames/s of all of them together."""

    cameras: int
    by_state: dict[str, int]
    frames_per_s: float

    @classmethod
    def of(cls, rows: Sequence[CameraRow]) -> OverviewSummary:
        """The summary of every camera's row."""
        by_state = {state.value: sum(row.state == state for row in rows) for state in ATTENTION_ORDER}
        return cls(len(rows), by_state, sum(row.frames_per_s for row in rows))

    def line(self) -> str:
        """``128 cameras: 2 anomalous, 0 erroring, 5 stale, 32 paused, 89 running; 412.5 frames/s``."""
        states = ", ".join(f"{count} {state}" for state, count in self.by_state.items())
        return f"{self.cameras} cameras: {states}; {self.frames_per_s:.1f} frames/s"


@dataclass(frozen=True)
class OverviewPage:
    """One page of the overview's rows, with the summary of all of them.

    Attributes:
        page: 1-based, within ``1..pages``.
    """

    rows: list[CameraRow]
    page: int
    pages: int
    per_page: int
    summary: OverviewSummary

    @classmethod
    def of(cls, rows: Sequence[CameraRow], page: int, per_page: int = PAGE_SIZE) -> OverviewPage:
        """Page ``page`` of ``rows`` (clamped to the pages there are)."""
        pages = max(1, math.ceil(len(rows) / per_page))
        page = min(max(page, 1), pages)
        return cls(list(rows[(page - 1) * per_page : page * per_page]), page, pages, per_page, OverviewSummary.of(rows))


def result_fields(client: redis.Redis, camera: str, frame_id: str) -> dict[str, str]:
    """The result hash of a frame as text.

    Raises:
        ResultMissingError: malformed id, never scored, or expired.
    """
    if not _FRAME_RE.match(frame_id):
        raise ResultMissingError(f"{frame_id!r} is not a frame id")
    raw = client.hgetall(result_key(camera, frame_id))
    if not raw:
        raise ResultMissingError(f"{camera} has no stored result for frame {frame_id!r} (never scored, or expired)")
    return text_fields(raw)


class OverlayRenderer:
    """Frames read back from Kafka with their stored map blended on and regions boxed, as PNG, cached.

    Why a cache: a stored result never changes (the store writes a frame once), so an overlay rendered for the
    live wall or the frame page is valid until it expires, and each read-back opens a Kafka consumer.
    """

    def __init__(self, config: ZsadConfig, store: ResultStore, capacity: int = 256) -> None:
        self.config = config
        self.store = store
        self.capacity = capacity
        self._cache: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._lock = Lock()

    def frame(self, camera: str, fields: Mapping[str, str]) -> np.ndarray:
        """The frame as RGB, cropped to the camera's ROI like the model's input.

        Raises:
            FrameUnavailableError: the record is gone or cannot be decoded within the configured limits.
        """
        from services.frame_path.decoding import crop_roi

        partition, offset = int(fields.get("partition", -1)), int(fields.get("offset", -1))
        data = fetch_frame(self.config.kafka, partition, offset, fields["frame_id"], camera=camera)
        try:
            return crop_roi(decode_image(data, self.config.limits.image_limits()), self._roi(camera, fields))
        except ZsadError as exc:
            raise FrameUnavailableError(f"frame {fields['frame_id']} cannot be shown: {exc}") from exc

    def _roi(self, camera: str, fields: Mapping[str, str]) -> tuple[int, int, int, int] | None:
        """The crop the result's map covers: recorded with it, else (older results) the configured ROI."""
        return roi_of(fields) or self.config.camera(camera).roi

    def overlay_png(self, camera: str, fields: Mapping[str, str], width: int = 0) -> bytes:
        """The overlay of a stored result, scaled to ``width`` pixels wide (0: the frame's size).

        A frame Kafka no longer has is drawn as the heat map alone, so the map stays visible.

        Raises:
            ResultMissingError: the result has no stored map.
        """
        key = (camera, fields["frame_id"], width)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        anomaly_map = self.store.get_map(camera, fields["frame_id"])
        if anomaly_map is None:
            raise ResultMissingError(f"frame {fields['frame_id']} of {camera} has no stored anomaly map")
        threshold = _number(fields, "threshold")
        try:
            picture = overlay(self.frame(camera, fields), anomaly_map, threshold=threshold)
        except FrameUnavailableError:
            picture = overlay(np.zeros((*anomaly_map.shape, 3), np.uint8), anomaly_map, threshold=threshold, alpha=1.0)
        picture = _draw_boxes(picture, boxes_of(fields), self._roi(camera, fields))
        if width and picture.shape[1] > width:
            height = max(1, round(picture.shape[0] * width / picture.shape[1]))
            picture = cv2.resize(picture, (width, height), interpolation=cv2.INTER_AREA)
        png = encode_png(picture)
        with self._lock:
            self._cache[key] = png
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return png


def heat_png(store: ResultStore, camera: str, fields: Mapping[str, str], width: int) -> bytes:
    """The stored map alone as a JET thumbnail ``width`` pixels wide, contoured at the threshold.

    Why not the frame: the live wall shows every new frame, and reading each back from Kafka costs the
    broker a fetch per frame; measured with two walls open that took 80 % of the pipeline's rate
    (BENCHMARKS.md), while the map lives in Redis next to the result. The frame page shows the real overlay.

    Raises:
        ResultMissingError: the result has no stored map.
    """
    anomaly_map = store.get_map(camera, fields["frame_id"])
    if anomaly_map is None:
        raise ResultMissingError(f"frame {fields['frame_id']} of {camera} has no stored anomaly map")
    height = max(1, round(anomaly_map.shape[0] * width / anomaly_map.shape[1]))
    blank = np.zeros((height, width, 3), np.uint8)
    return encode_png(overlay(blank, anomaly_map, threshold=_number(fields, "threshold"), alpha=1.0))


def _draw_boxes(
    picture: np.ndarray, boxes: list[tuple[int, int, int, int]], roi: tuple[int, int, int, int] | None
) -> np.ndarray:
    """Regions are in original-frame pixels; the picture is the ROI crop, so boxes move by the ROI's corner."""
    if not boxes:
        return picture
    picture = np.ascontiguousarray(picture)
    dx, dy = (roi[0], roi[1]) if roi is not None else (0, 0)
    thickness = max(1, min(picture.shape[:2]) // 150)
    for x, y, w, h in boxes:
        cv2.rectangle(picture, (x - dx, y - dy), (x - dx + w - 1, y - dy + h - 1), _BOX_COLOR, thickness)
    return picture
