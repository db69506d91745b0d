"""A gateway's state and counts in a small Redis hash, for ``zsad status`` and the web view's overview.

Why Redis and not a scrape of the gateway's Prometheus endpoint: the endpoint exists only when ``metrics_port``
is set, its port differs per gateway, and the web view runs inside Ray Serve, possibly on another host than the
gateway; Redis is already what every reader of the system connects to. The hash lives under the camera's hash
tag (``zsad:{cam}:gateway``) with a TTL of a few heartbeats, so a gateway that dies without a word disappears
on its own ("not reporting") instead of claiming to run. A clean stop writes ``stopped`` with its final counts
and keeps it a day. A gateway that cannot reach Redis (a camera PC where only Kafka is open) keeps sending
frames: a failed heartbeat is logged once and retried quietly.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import redis

from services.config import RedisConfig
from services.gateway.metrics import GatewayMetrics
from services.stores.result_store import camera_prefix, connect

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 5.0
MISSED_HEARTBEATS = 3  # the hash expires after this many intervals without a heartbeat
STOPPED_TTL_S = 24 * 3600
COUNTS = ("captured", "sent", "spooled", "failed", "spool_bytes")


def heartbeat_key(camera: str) -> str:
    """Key of a camera gateway's heartbeat hash."""
    return f"{camera_prefix(camera)}:gateway"


@dataclass(frozen=True)
class GatewayStatus:
    """What a gateway last reported.

    Attributes:
        camera: the camera the gateway feeds.
        state: ``running``, ``stopped`` (a clean stop), or ``not reporting`` (never started, died, or cannot
            reach Redis).
        kind: ``folder``, ``stream`` or ``gige`` (empty when not reporting).
        pid, host: the gateway process and the machine it runs on.
        captured, sent, spooled, failed: frames since the process started; ``spool_bytes`` now in its spool.
        updated_ts: when it last reported (0: never).
    """

    camera: str
    state: str
    kind: str = ""
    pid: int = 0
    host: str = ""
    captured: int = 0
    sent: int = 0
    spooled: int = 0
    failed: int = 0
    spool_bytes: int = 0
    updated_ts: float = 0.0

    @classmethod
    def from_fields(cls, camera: str, fields: Mapping[bytes | str, bytes | str]) -> GatewayStatus:
        """Parse a heartbeat hash; an empty one is a gateway that is not reporting."""
        text = {_str(key): _str(value) for key, value in fields.items()}
        if not text:
            return cls(camera, "not reporting")
        return cls(
            camera=camera,
            state=text.get("state", "running"),
            kind=text.get("kind", ""),
            pid=_int(text.get("pid")),
            host=text.get("host", ""),
            **{name: _int(text.get(name)) for name in COUNTS},
            updated_ts=float(text.get("updated_ts") or 0.0),
        )


class GatewayHeartbeat:
    """Publishes one gateway's state and counts every ``interval_s`` from a daemon thread.

    Args:
        client: a redis-py client.
        camera, kind: the gateway's camera and source kind.
        metrics: the gateway's counters, read at every beat.
        interval_s: seconds between beats; the hash expires after :data:`MISSED_HEARTBEATS` of them.
    """

    def __init__(
        self,
        client: redis.Redis,
        camera: str,
        kind: str,
        metrics: GatewayMetrics,
        interval_s: float = HEARTBEAT_INTERVAL_S,
    ) -> None:
        self.client = client
        self.camera = camera
        self.kind = kind
        self.metrics = metrics
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    @classmethod
    def from_config(cls, config: RedisConfig, camera: str, kind: str, metrics: GatewayMetrics) -> GatewayHeartbeat:
        """A heartbeat to the configured Redis, with short timeouts so an absent Redis costs the gateway nothing."""
        return cls(connect(config, socket_timeout=2.0, socket_connect_timeout=2.0), camera, kind, metrics)

    def start(self) -> None:
        """Beat now and then every ``interval_s`` until :meth:`stop`, from a thread: an unreachable Redis never
        delays the gateway's start."""
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.camera}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and report ``stopped`` with the final counts."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval_s + 5.0)
        self.publish("stopped")
        self.client.close()

    def publish(self, state: str) -> bool:
        """Write the hash once; False (logged once per outage) when Redis cannot be reached."""
        totals = self.metrics.totals()
        fields = {"camera": self.camera, "kind": self.kind, "state": state, "pid": os.getpid(),
                  "host": socket.gethostname(), "updated_ts": repr(time.time()),
                  **{name: int(totals[name]) for name in COUNTS}}  # fmt: skip
        ttl = STOPPED_TTL_S if state == "stopped" else max(1, round(self.interval_s * MISSED_HEARTBEATS))
        key = heartbeat_key(self.camera)
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl)
                pipe.execute()
        except (redis.RedisError, OSError) as exc:
            if not self._failing:
                log.warning("camera %s: gateway heartbeat not written to Redis (retrying quietly): %s", self.camera,
                            exc)  # fmt: skip
            self._failing = True
            return False
        if self._failing:
            log.info("camera %s: gateway heartbeat written to Redis again", self.camera)
        self._failing = False
        return True

    def _run(self) -> None:
        self.publish("running")
        while not self._stop.wait(self.interval_s):
            self.publish("running")


def read_gateway_statuses(client: redis.Redis, cameras: Iterable[str]) -> list[GatewayStatus]:
    """The last report of each camera's gateway, in one round trip (``not reporting`` where there is none)."""
    names = list(cameras)
    if not names:
        return []
    with client.pipeline(transaction=False) as pipe:
        for camera in names:
            pipe.hgetall(heartbeat_key(camera))
        replies = pipe.execute()
    return [GatewayStatus.from_fields(camera, fields) for camera, fields in zip(names, replies, strict=True)]


def format_gateway_status(status: GatewayStatus, now: float | None = None) -> str:
    """One line of ``zsad status`` for a gateway."""
    line = f"gateway {status.camera}"
    if status.kind:
        line += f" ({status.kind})"
    line += f": {status.state}"
    if status.state == "not reporting":
        return line
    age = max(0.0, (time.time() if now is None else now) - status.updated_ts)
    return (f"{line}; captured {status.captured}, sent {status.sent}, spooled {status.spooled}, "
            f"failed {status.failed}, spool {status.spool_bytes} B; pid {status.pid} on {status.host}, "
            f"reported {age:.0f} s ago")  # fmt: skip


def _str(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0
