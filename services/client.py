"""A Python client for integrations (an MES, a notebook): results, overlays and a gap-free follow of decisions.

Why Redis directly: the result store is the system's record of decisions, and a camera's event stream gives
each of them a monotonically increasing id; :meth:`ZsadClient.follow` keeps the last id it delivered and, after a
dropped connection, asks Redis for what came after it, so an integration sees every decision exactly once and in
order (as long as the stream, capped at ``redis.events_maxlen``, still holds the entries it missed). Browsers use
the web view, which forwards the same stream as server-sent events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from services.config import ZsadConfig, load_config
from services.read_models import OverlayRenderer, decision_of, part_of, result_fields, text_fields
from services.state_home import stack_config_path
from services.stores.result_store import ResultStore, events_key

log = logging.getLogger(__name__)
RECONNECT_DELAY_S = 0.5


@dataclass(frozen=True)
class Decision:
    """One result from a camera's event stream.

    Attributes:
        event_id: the stream entry's id; pass it as ``since`` to resume after this decision.
        fields: the result's fields as text (``camera``, ``frame_id``, ``score``, ``label``, ``method`` ...).
    """

    event_id: str
    fields: dict[str, str]

    @property
    def frame_id(self) -> str:
        """The frame this decision is about."""
        return self.fields["frame_id"]

    @property
    def decision(self) -> str:
        """``decision`` when the inspector stored one, else ``anomalous``/``normal`` from the label."""
        return decision_of(self.fields)

    @property
    def part(self) -> dict[str, str]:
        """The part this decision is about (``part_serial``, ``part_id``, ``part_station`` that are set): the keys a
        PLC or MES joins on; empty when the frame named no part."""
        return part_of(self.fields)


class ZsadClient:
    """Reads results of a running system.

    Args:
        config: the system's configuration (its ``redis``, ``kafka`` and ``cameras`` sections are used).
        block_ms: longest wait of one ``XREAD BLOCK`` in :meth:`follow`.
    """

    def __init__(self, config: ZsadConfig, *, block_ms: int = 5000) -> None:
        self.config = config
        self.block_ms = block_ms
        self.store = ResultStore.from_config(config, socket_timeout=block_ms / 1000 + 10)
        self._renderer = OverlayRenderer(config, self.store)

    @classmethod
    def from_file(cls, path: str | None = None) -> ZsadClient:
        """A client for a configuration file (default: the running local stack's, in the state home)."""
        return cls(load_config(path or stack_config_path()))

    def results(self, camera: str, *, worst: int = 0, recent: int = 0) -> list[dict[str, str]]:
        """The ``worst`` highest-scoring results (worst first) or the ``recent`` newest (newest first)."""
        self.config.camera(camera)
        if (worst > 0) == (recent > 0):
            raise ValueError("give exactly one of worst=N or recent=N, a positive count")
        if worst:
            return [result_fields(self.store.client, camera, fid) for fid, _ in self.store.worst(camera, worst)]
        return [text_fields(raw) for _, raw in self.store.client.xrevrange(events_key(camera), count=recent)]

    def result(self, camera: str, frame_id: str) -> dict[str, str]:
        """One frame's result (raises :class:`~services.read_models.ResultMissingError` if absent)."""
        self.config.camera(camera)
        return result_fields(self.store.client, camera, frame_id)

    def overlay(self, camera: str, frame_id: str) -> bytes:
        """The frame (read back from Kafka) with its anomaly map and regions drawn, as PNG bytes."""
        return self._renderer.overlay_png(camera, self.result(camera, frame_id))

    def follow(self, camera: str, since: str | None = None) -> Iterator[Decision]:
        """Every decision of ``camera`` after ``since``, in order, blocking for new ones; never ends by itself.

        Args:
            since: a stream id to resume after (a :attr:`Decision.event_id`), ``"0"`` for everything the stream
                holds, or ``None`` for decisions from now on.

        A lost connection is retried after :data:`RECONNECT_DELAY_S` from the last delivered id, so nothing is
        skipped or repeated.
        """
        self.config.camera(camera)
        key = events_key(camera)
        last = since if since is not None else self._newest_id(key)
        while True:
            try:
                replies = self.store.client.xread({key: last}, count=500, block=self.block_ms)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("event stream of %s: %s; resuming after %s", camera, exc, last)
                time.sleep(RECONNECT_DELAY_S)
                continue
            for _, entries in replies or []:
                for entry_id, raw in entries:
                    last = entry_id.decode()
                    yield Decision(last, text_fields(raw))

    def _newest_id(self, key: str) -> str:
        """The id of the newest entry now ("0-0" when empty): resolved at once, so nothing after it is missed."""
        newest = self.store.client.xrevrange(key, count=1)
        return newest[0][0].decode() if newest else "0-0"

    def close(self) -> None:
        """Release the Redis connections."""
        self.store.close()
