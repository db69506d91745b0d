"""The Redis result store: anomaly maps, scores and events per camera, written idempotently.

Why idempotent: ingest delivers at least once (a frame is re-read after a crash between the Redis write and the
offset commit), so writing a frame's result twice must change nothing. One Lua script per frame checks the
result hash and writes all four keys only when it is absent; Redis runs a script atomically, so two replicas
racing on the same frame cannot both append an event.

Why the record read first wins a frame-id conflict (one id, other bytes): batches, the in-flight window and
several replicas score two such records in either order, so keeping whichever was written first would make the
winner a matter of timing. The script compares where the records were read instead: the lower
``(partition, offset)`` keeps the id, also when the higher one was written first (its result is then replaced),
and a re-delivery of either changes nothing more.

Key layout (docs/architecture.md), ``{cam}`` being a Redis Cluster hash tag so one camera's keys share a slot and
the script may touch all four:

* ``zsad:{cam}:result:{frame_id}``: hash with TTL, the frame's fields (:data:`RESULT_FIELDS`) and ``event_id``,
  the id of its entry in the event stream (deleted from there if the result is replaced).
* ``zsad:{cam}:map:{frame_id}``: string with TTL, the anomaly map as a 16-bit PNG; ``map_min`` and
  ``map_scale`` in the hash turn its integers back into floats.
* ``zsad:{cam}:events``: stream capped near ``events_maxlen``, one entry per frame (the hash's fields), so a
  consumer gets the decision, the score and the defect regions in one message.
* ``zsad:{cam}:scores``: sorted set frame id -> score, trimmed to the ``scores_maxlen`` highest scores.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
import redis
from redis.exceptions import NoScriptError

from services.config import RedisConfig, ZsadConfig
from services.records import CAMERA_ID_PATTERN, FRAME_ID_PATTERN
from zsad_core.decisions import Region, decode_regions
from zsad_core.imageio import encode_png

MAP_LEVELS = 65535  # 16-bit PNG: the largest quantisation error is half a level of the map's range
RESULT_FIELDS = (
    "camera", "frame_id", "score", "label", "threshold", "method", "prompt_version", "partition", "offset",
    "capture_ts", "infer_ts", "write_ts", "map_min", "map_scale", "digest", "reference_version", "decision",
    "settings_version", "calibration_version", "regions", "weights", "roi", "replaces", "part_id", "part_serial",
    "part_station",
)  # fmt: skip
_CAMERA_RE = re.compile(CAMERA_ID_PATTERN)
_FRAME_RE = re.compile(FRAME_ID_PATTERN)

# KEYS: result hash, map string, events stream, scores zset.
# ARGV: ttl_s, events_maxlen, scores_maxlen, frame_id, score, map_png ('' = no map), digest, partition, offset,
# field, value, ...
# Returns {code, partition, offset}. Codes: 1 written; 0 already stored for the same bytes, or by a writer that
# recorded no digest; -1 the frame id is stored for other bytes read at a lower position, which stays; 2 the
# frame id was stored for other bytes read at a higher position, and this write replaced it. The position is
# that of the result found (-1, -1 when none): the one kept for -1, the one replaced for 2.
_WRITE_SCRIPT = """
local replaced, rival_partition, rival_offset = '', -1, -1
if redis.call('EXISTS', KEYS[1]) == 1 then
  local stored = redis.call('HMGET', KEYS[1], 'digest', 'partition', 'offset', 'event_id')
  rival_partition, rival_offset = tonumber(stored[2]) or -1, tonumber(stored[3]) or -1
  if not stored[1] or stored[1] == '' or ARGV[7] == '' or stored[1] == ARGV[7] then
    return {0, rival_partition, rival_offset}
  end
  local partition, offset = tonumber(ARGV[8]), tonumber(ARGV[9])
  local known = partition >= 0 and offset >= 0 and rival_partition >= 0 and rival_offset >= 0
  if not (known and (partition < rival_partition or (partition == rival_partition and offset < rival_offset))) then
    return {-1, rival_partition, rival_offset}
  end
  if stored[4] then
    redis.call('XDEL', KEYS[3], stored[4])
  end
  redis.call('DEL', KEYS[1], KEYS[2])
  replaced = stored[2] .. ':' .. stored[3]
end
local fields = {}
for i = 10, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
fields[#fields + 1] = 'replaces'
fields[#fields + 1] = replaced
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[2], ARGV[6], 'EX', ARGV[1])
end
local event_id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
redis.call('HSET', KEYS[1], 'event_id', event_id)
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
local extra = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[3])
if extra > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, extra - 1)
end
if replaced ~= '' then
  return {2, rival_partition, rival_offset}
end
return {1, -1, -1}
"""


class WriteOutcome(StrEnum):
    """What writing one frame's result did."""

    STORED = "stored"  # new: hash, map, event and score written
    DUPLICATE = "duplicate"  # the frame id was stored for the same bytes (a re-delivery): nothing changed
    CONFLICT = "conflict"  # the frame id was stored for other bytes read earlier: nothing changed, this one refused
    REPLACED = "replaced"  # the frame id was stored for other bytes read later: this frame's result took its place


@dataclass(frozen=True)
class WriteReceipt:
    """The outcome of one write and, when the frame id was taken, where that other record was read.

    Why the position: the record that loses a frame-id conflict is dead-lettered, and its letter names the
    record kept; after a replacement, ingest dead-letters the record whose result was replaced.

    Attributes:
        outcome: what the write did.
        rival_partition, rival_offset: for ``conflict`` the kept record's position, for ``replaced`` the replaced
            record's, for ``duplicate`` the stored record's; -1 when unknown or for ``stored``.
    """

    outcome: WriteOutcome
    rival_partition: int = -1
    rival_offset: int = -1


_OUTCOME_OF_CODE = {
    1: WriteOutcome.STORED, 0: WriteOutcome.DUPLICATE, -1: WriteOutcome.CONFLICT, 2: WriteOutcome.REPLACED,
}  # fmt: skip


def camera_prefix(camera: str) -> str:
    """``zsad:{cam}``: the prefix, with its hash tag, of every key of one camera."""
    return f"zsad:{{{camera}}}"


def result_key(camera: str, frame_id: str) -> str:
    """Key of a frame's result hash."""
    return f"{camera_prefix(camera)}:result:{frame_id}"


def map_key(camera: str, frame_id: str) -> str:
    """Key of a frame's anomaly map PNG."""
    return f"{camera_prefix(camera)}:map:{frame_id}"


def events_key(camera: str) -> str:
    """Key of a camera's event stream."""
    return f"{camera_prefix(camera)}:events"


def scores_key(camera: str) -> str:
    """Key of a camera's score sorted set."""
    return f"{camera_prefix(camera)}:scores"


def encode_map(anomaly_map: np.ndarray) -> tuple[bytes, float, float]:
    """Quantise a float map to a 16-bit PNG.

    Args:
        anomaly_map: ``(H, W)`` finite float map.

    Returns:
        ``(png, map_min, map_scale)``: ``value = map_min + level * map_scale`` decodes it, within
        ``map_scale / 2`` of the original (``map_scale`` is the range over 65535; 0 for a constant map).
    """
    levels, low, scale = _quantise(anomaly_map)
    return encode_png(levels), low, scale


def stored_map_values(anomaly_map: np.ndarray) -> np.ndarray:
    """The map exactly as :func:`decode_map` returns it once stored.

    Why: defect regions are drawn on these values, so anyone recomputing them from the stored map and the
    result's thresholds gets the same boxes, even for pixels within a quantisation step of the threshold.
    """
    levels, low, scale = _quantise(anomaly_map)
    return (low + levels.astype(np.float64) * scale).astype(np.float32)


def _quantise(anomaly_map: np.ndarray) -> tuple[np.ndarray, float, float]:
    values = np.asarray(anomaly_map, dtype=np.float64)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"an anomaly map must be a non-empty (H, W) array, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError("an anomaly map must be finite (it holds NaN or inf)")
    low, high = float(values.min()), float(values.max())
    scale = (high - low) / MAP_LEVELS
    levels = np.zeros(values.shape, np.uint16) if scale == 0.0 else np.rint((values - low) / scale).astype(np.uint16)
    return levels, low, scale


def decode_map(png: bytes, map_min: float, map_scale: float) -> np.ndarray:
    """Invert :func:`encode_map`: ``(H, W)`` float32."""
    levels = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
    if levels is None or levels.ndim != 2 or levels.dtype != np.uint16:
        raise ValueError("stored anomaly map is not a single-channel 16-bit PNG")
    return (map_min + levels.astype(np.float64) * map_scale).astype(np.float32)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """What serving hands to the store for one frame.

    Attributes:
        camera, frame_id: identity of the frame (the idempotency key).
        score: image-level anomaly score.
        threshold: the camera's threshold when the frame was scored; ``label`` is ``score >= threshold``.
        method: the method that scored it.
        anomaly_map: ``(H, W)`` float map, or ``None`` when the method gives none.
        prompt_version: the resolved prompt version (never an alias), ``None`` for zero-shot prompts.
        partition, offset: where the frame was read from Kafka (-1 when it did not come from Kafka).
        capture_ts, infer_ts: seconds since the epoch when the frame was taken and scored.
        digest: of the frame's bytes; a later write of the same id with another digest is a conflict
            (``""``: unknown, never conflicts).
        reference_version: the camera's few-shot reference set version that scored it, ``None`` for zero-shot.
        settings_version, calibration_version: the camera settings (``s<N>``) and the calibration record
            (``c<N>``) that decided the frame; ``None`` for the configuration file's values, or no calibration.
        regions: the defect regions at the camera's pixel threshold, encoded by
            :func:`~zsad_core.decisions.encode_regions`; ``None`` when the camera has no pixel threshold.
        weights: where the backbone's CLIP weights came from (``random``, ``tag``, ``file``, ``hf``): a result
            scored with ``random`` weights is noise, and says so wherever it is read.
        roi: ``(x, y, w, h)`` of the frame that ingest cut and the model saw (the map covers it), ``None`` when
            unknown. Why stored: the ROI changes live, so a reader cropping the frame for the map must use the
            crop that produced it, not the one configured now.
        part_id, part_serial, part_station: the part the frame shows, from its record's part headers (``None``:
            not named), so that a PLC or MES can join the decision to the part.
    """

    camera: str
    frame_id: str
    score: float
    threshold: float
    method: str
    anomaly_map: np.ndarray | None = field(default=None, repr=False)
    prompt_version: str | None = None
    partition: int = -1
    offset: int = -1
    capture_ts: float = 0.0
    infer_ts: float = 0.0
    digest: str = ""
    reference_version: str | None = None
    settings_version: str | None = None
    calibration_version: str | None = None
    regions: str | None = None
    weights: str = ""
    roi: tuple[int, int, int, int] | None = None
    part_id: str | None = None
    part_serial: str | None = None
    part_station: str | None = None

    def __post_init__(self) -> None:
        """Refuse ids that would break the key layout (a ``}`` would move the key out of its hash tag)."""
        if not _CAMERA_RE.match(self.camera):
            raise ValueError(f"camera id {self.camera!r} does not match {CAMERA_ID_PATTERN}")
        if not _FRAME_RE.match(self.frame_id):
            raise ValueError(f"frame id {self.frame_id!r} does not match {FRAME_ID_PATTERN}")
        if not math.isfinite(self.score):
            raise ValueError(f"score of frame {self.frame_id} is not finite: {self.score}")

    @property
    def label(self) -> int:
        """1 if anomalous (score at or above the threshold), else 0."""
        return int(self.score >= self.threshold)

    @property
    def decision(self) -> str:
        """``reject`` (anomalous) or ``pass``: the name of :attr:`label` in metrics and events."""
        return "reject" if self.label else "pass"


def roi_of(fields: Mapping[str, str]) -> tuple[int, int, int, int] | None:
    """The crop a stored result's map covers (its ``roi`` field), ``None`` for results written before it was
    recorded or whose field is unreadable (readers then use the configured ROI)."""
    parts = fields.get("roi", "").split(",")
    if len(parts) != 4 or not all(part.isdigit() for part in parts):
        return None
    x, y, width, height = (int(part) for part in parts)
    return x, y, width, height


@dataclass(frozen=True)
class StoredResult:
    """A frame's result as read back from Redis (result hash or event entry).

    ``map_min``/``map_scale`` are ``None`` when no map was stored; ``regions`` is ``None`` when none were
    computed (no pixel threshold, or a result written before regions existed), ``()`` when none were found.
    ``replaces`` is ``"<partition>:<offset>"`` of the record whose result this one replaced (it reused the frame id
    for other bytes at a higher position), ``""`` otherwise. ``part_id``, ``part_serial`` and ``part_station`` are
    ``None`` when the frame named no part (or the result was written before parts were stored).
    """

    camera: str
    frame_id: str
    score: float
    label: int
    threshold: float
    method: str
    prompt_version: str | None
    partition: int
    offset: int
    capture_ts: float
    infer_ts: float
    write_ts: float
    map_min: float | None
    map_scale: float | None
    digest: str = ""
    reference_version: str | None = None
    decision: str = ""
    settings_version: str | None = None
    calibration_version: str | None = None
    regions: tuple[Region, ...] | None = None
    weights: str = ""
    roi: tuple[int, int, int, int] | None = None
    replaces: str = ""
    part_id: str | None = None
    part_serial: str | None = None
    part_station: str | None = None

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> StoredResult:
        """Parse a result hash or event entry (bytes or str keys and values)."""
        text = {_str(key): _str(value) for key, value in fields.items()}
        return cls(
            camera=text["camera"],
            frame_id=text["frame_id"],
            score=float(text["score"]),
            label=int(text["label"]),
            threshold=float(text["threshold"]),
            method=text["method"],
            prompt_version=text.get("prompt_version") or None,
            partition=int(text["partition"]),
            offset=int(text["offset"]),
            capture_ts=float(text["capture_ts"]),
            infer_ts=float(text["infer_ts"]),
            write_ts=float(text["write_ts"]),
            map_min=float(text["map_min"]) if text.get("map_min") else None,
            map_scale=float(text["map_scale"]) if text.get("map_scale") else None,
            digest=text.get("digest", ""),
            reference_version=text.get("reference_version") or None,
            decision=text.get("decision", ""),
            settings_version=text.get("settings_version") or None,
            calibration_version=text.get("calibration_version") or None,
            regions=tuple(decode_regions(text["regions"])) if text.get("regions") else None,
            weights=text.get("weights", ""),
            roi=roi_of(text),
            replaces=text.get("replaces", ""),
            part_id=text.get("part_id") or None,
            part_serial=text.get("part_serial") or None,
            part_station=text.get("part_station") or None,
        )


@dataclass(frozen=True)
class StoredSource:
    """Which record a stored result came from: the digest of its bytes (``""``: not recorded), its position, and
    the ``"<partition>:<offset>"`` of the record whose result it replaced (``""``: none)."""

    digest: str
    partition: int
    offset: int
    replaces: str = ""


def _str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ResultStore:
    """Writes and reads frame results in Redis with the key layout of this module.

    Args:
        client: a redis-py client with ``decode_responses=False`` (maps are binary).
        result_ttl_s: lifetime of result hashes and maps.
        camera_ttl_s: per-camera lifetimes overriding ``result_ttl_s``.
        events_maxlen: approximate cap of each event stream (``MAXLEN ~``: Redis trims whole stream nodes,
            so a stream may hold up to about a hundred entries more).
        scores_maxlen: exact cap of each score set; the lowest scores are dropped.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        result_ttl_s: int = 24 * 3600,
        camera_ttl_s: Mapping[str, int] | None = None,
        events_maxlen: int = 10_000,
        scores_maxlen: int = 10_000,
    ):
        limits = {"result_ttl_s": result_ttl_s, "events_maxlen": events_maxlen, "scores_maxlen": scores_maxlen}
        for name, value in limits.items():
            if value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        self.client = client
        self.result_ttl_s = result_ttl_s
        self.camera_ttl_s = dict(camera_ttl_s or {})
        self.events_maxlen = events_maxlen
        self.scores_maxlen = scores_maxlen
        self._write = client.register_script(_WRITE_SCRIPT)

    @classmethod
    def from_config(cls, config: ZsadConfig | RedisConfig, **client_kwargs: object) -> ResultStore:
        """A store for ``config`` (the whole config gives per-camera TTLs; a ``RedisConfig`` only defaults).

        Args:
            config: the configuration.
            **client_kwargs: extra redis-py arguments (timeouts, TLS).
        """
        redis_cfg = config.redis if isinstance(config, ZsadConfig) else config
        camera_ttl = {}
        if isinstance(config, ZsadConfig):
            camera_ttl = {cam: cfg.result_ttl_s for cam, cfg in config.cameras.items() if cfg.result_ttl_s}
        return cls(
            connect(redis_cfg, **client_kwargs),
            result_ttl_s=redis_cfg.result_ttl_s,
            camera_ttl_s=camera_ttl,
            events_maxlen=redis_cfg.events_maxlen,
            scores_maxlen=redis_cfg.scores_maxlen,
        )

    def ttl_for(self, camera: str) -> int:
        """Result lifetime of ``camera`` in seconds."""
        return self.camera_ttl_s.get(camera, self.result_ttl_s)

    def ping(self) -> bool:
        """True when Redis answers; connection and auth errors propagate, so a health check reports the cause."""
        return bool(self.client.ping())

    def write_result(self, result: FrameResult) -> WriteReceipt:
        """Store one frame (see :meth:`write_results`)."""
        return self.write_results([result])[0]

    def write_results(self, batch: Sequence[FrameResult]) -> list[WriteReceipt]:
        """Store a batch in one round trip; one receipt per frame.

        A frame id stored for other bytes is a conflict, and the record read first wins it: the lower
        ``(partition, offset)`` keeps or takes the frame id, whichever was written first (a result without a Kafka
        position never replaces one, and is never replaced). A replacement deletes the replaced result's event
        from the stream and appends the new one, whose ``replaces`` field names the replaced record's position.

        Each frame is one atomic script call. If Redis lost the cached script (restart, ``SCRIPT FLUSH``),
        the script is loaded and the whole batch re-sent: frames already written are then skipped, which the
        idempotency makes safe.
        """
        if not batch:
            return []
        calls = [self._script_call(result, time.time()) for result in batch]
        replies = self._run(calls)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            self.client.script_load(_WRITE_SCRIPT)
            replies = self._run(calls)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [WriteReceipt(_OUTCOME_OF_CODE[int(code)], int(partition), int(offset))
                for code, partition, offset in replies]  # fmt: skip

    def _run(self, calls: list[tuple[list[str], list[bytes | str | int | float]]]) -> list[object]:
        with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                # evalsha rather than the Script object: inside a pipeline the latter adds a SCRIPT EXISTS
                # round trip before every batch.
                pipe.evalsha(self._write.sha, len(keys), *keys, *args)
            return pipe.execute(raise_on_error=False)

    def _script_call(self, result: FrameResult, write_ts: float) -> tuple[list[str], list[bytes | str | int | float]]:
        cam, fid = result.camera, result.frame_id
        png, map_min, map_scale = b"", "", ""
        if result.anomaly_map is not None:
            png, low, scale = encode_map(result.anomaly_map)
            map_min, map_scale = repr(low), repr(scale)
        fields = {
            "camera": cam,
            "frame_id": fid,
            "score": repr(float(result.score)),
            "label": str(result.label),
            "threshold": repr(float(result.threshold)),
            "method": result.method,
            "prompt_version": result.prompt_version or "",
            "partition": str(result.partition),
            "offset": str(result.offset),
            "capture_ts": repr(float(result.capture_ts)),
            "infer_ts": repr(float(result.infer_ts)),
            "write_ts": repr(write_ts),
            "map_min": map_min,
            "map_scale": map_scale,
            "digest": result.digest,
            "reference_version": result.reference_version or "",
            "decision": result.decision,
            "settings_version": result.settings_version or "",
            "calibration_version": result.calibration_version or "",
            "regions": result.regions if result.regions is not None else "",
            "weights": result.weights,
            "roi": ",".join(str(side) for side in result.roi) if result.roi is not None else "",
            "part_id": result.part_id or "",
            "part_serial": result.part_serial or "",
            "part_station": result.part_station or "",
        }
        keys = [result_key(cam, fid), map_key(cam, fid), events_key(cam), scores_key(cam)]
        args: list[bytes | str | int | float] = [
            self.ttl_for(cam), self.events_maxlen, self.scores_maxlen, fid, repr(float(result.score)), png,
            result.digest, result.partition, result.offset,
        ]  # fmt: skip
        for name, value in fields.items():
            args += [name, value]
        return keys, args

    def stored(self, frames: Sequence[tuple[str, str]]) -> list[bool]:
        """Whether each ``(camera, frame_id)`` already has a result, in one round trip.

        Why: a replayed or re-delivered frame whose result exists needs no model call at all; the write
        script would refuse to change it anyway.
        """
        if not frames:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for camera, frame_id in frames:
                pipe.exists(result_key(camera, frame_id))
            return [bool(found) for found in pipe.execute()]

    def stored_sources(self, frames: Sequence[tuple[str, str]]) -> list[StoredSource | None]:
        """Per ``(camera, frame_id)``: ``None`` if no result exists, else the digest and position it was stored for.

        Why: a frame whose result exists needs no model call when it is a re-delivery of the same bytes, or when
        its id is reused for other bytes read later (it will be refused); one round trip tells which.
        """
        if not frames:
            return []
        with self.client.pipeline(transaction=False) as pipe:
            for camera, frame_id in frames:
                pipe.hmget(result_key(camera, frame_id), ["camera", "digest", "partition", "offset", "replaces"])
            replies = pipe.execute()
        return [
            None
            if camera is None
            else StoredSource(_str(digest or b""), int(partition or -1), int(offset or -1), _str(replaces or b""))
            for camera, digest, partition, offset, replaces in replies
        ]

    def get_result(self, camera: str, frame_id: str) -> StoredResult | None:
        """The stored result of a frame, or ``None`` if it was never written or has expired."""
        fields = self.client.hgetall(result_key(camera, frame_id))
        return StoredResult.from_fields(fields) if fields else None

    def get_map(self, camera: str, frame_id: str) -> np.ndarray | None:
        """The ``(H, W)`` float32 anomaly map of a frame, or ``None`` if absent or expired."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hmget(result_key(camera, frame_id), ["map_min", "map_scale"])
            pipe.get(map_key(camera, frame_id))
            (map_min, map_scale), png = pipe.execute()
        if not png or not map_min or not map_scale:
            return None
        return decode_map(png, float(map_min), float(map_scale))

    def worst(self, camera: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` highest-scoring frames whose results still exist, as ``(frame_id, score)``, worst first.

        The score set outlives the results' TTLs, so members whose result hash has expired are removed here,
        when they are first seen.
        """
        if n <= 0:
            return []
        key = scores_key(camera)
        while True:
            members = self.client.zrevrange(key, 0, n - 1, withscores=True)
            alive = self.stored([(camera, _str(member)) for member, _ in members])
            dead = [member for (member, _), exists in zip(members, alive, strict=True) if not exists]
            if not dead:
                return [(_str(member), float(score)) for member, score in members]
            self.client.zrem(key, *dead)

    def recent(self, camera: str, n: int) -> list[StoredResult]:
        """The last ``n`` events of a camera, newest first."""
        if n <= 0:
            return []
        entries = self.client.xrevrange(events_key(camera), count=n)
        return [StoredResult.from_fields(fields) for _, fields in entries]

    def count_results(self, camera: str) -> int:
        """Frames of a camera in its worst-N set: one per stored frame, until ``scores_maxlen`` or expiry trims it."""
        return int(self.client.zcard(scores_key(camera)))

    def count_events(self, camera: str) -> int:
        """Number of entries in a camera's event stream (at most about ``events_maxlen``)."""
        return int(self.client.xlen(events_key(camera)))

    def close(self) -> None:
        """Release the client's connections."""
        self.client.close()


def connect(config: RedisConfig, **client_kwargs: object) -> redis.Redis:
    """A binary-safe redis-py client for ``config``.

    The password comes from ``config.password``; a password written in the URL wins over it (redis-py's rule).
    """
    options: dict[str, object] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "health_check_interval": 30}
    if config.password is not None:
        options["password"] = config.password.get_secret_value()
    if config.username is not None:
        options["username"] = config.username
    options.update(client_kwargs)
    return redis.Redis.from_url(config.url, decode_responses=False, **options)
