"""Following a Redis events channel: the one loop behind live prompt versions, reference sets and camera settings.

Why a subscription and a periodic re-check: pub/sub is at most once (a message sent while the connection is
down is lost), so every subscriber re-reads everything it follows after (re)subscribing and every
``check_every_s``. Why ``check`` decides what concerns it at each call: what a replica follows changes while it
runs (a camera switched to an alias live), so nothing is computed once at start.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)

CHECK_EVERY_S = 30.0
RETRY_S = 1.0


class EventFollower:
    """Calls ``check(subject)`` for each event on ``channel`` naming a subject, and ``check(None)`` (everything)
    after subscribing and every ``check_every_s``, in one daemon thread.

    ``check`` runs in the follower's thread and applies its changes itself (between batches, with the locks of
    what it changes). An exception it raises is logged and the follower subscribes again after ``RETRY_S``.

    Args:
        client: the Redis client (pub/sub takes its own connection from its pool).
        channel: the events channel.
        subject_of: the subject an event (decoded JSON object) concerns, ``None`` for events to ignore.
        check: re-reads and applies what ``subject`` (``None``: everything followed) now names.
        name: the thread's name, also in log lines.
        check_every_s: the fallback re-check interval.
    """

    def __init__(
        self,
        client: redis.Redis,
        channel: str,
        *,
        subject_of: Callable[[dict[str, object]], str | None],
        check: Callable[[str | None], None],
        name: str,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.client = client
        self.channel = channel
        self.subject_of = subject_of
        self.check = check
        self.name = name
        self.check_every_s = check_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> EventFollower:
        """Subscribe and start following."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following (a follower never started stops at once)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:  # noqa: BLE001 - Redis away or a failed check: retry, serving goes on
                log.warning("%s: %s; subscribing again in %.0f s", self.name, exc, RETRY_S)
                self._stop.wait(RETRY_S)

    def _follow(self) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.channel)
        try:
            self.check(None)  # catch up with changes made while not subscribed
            next_check = time.monotonic() + self.check_every_s
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                subject = _subject(message, self.subject_of) if message is not None else None
                if subject is not None:
                    self.check(subject)
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + self.check_every_s
                    self.check(None)
        finally:
            pubsub.close()


def _subject(message: dict[str, object], subject_of: Callable[[dict[str, object]], str | None]) -> str | None:
    data = message.get("data")
    try:
        event = json.loads(data.decode() if isinstance(data, bytes) else str(data))
    except (ValueError, UnicodeDecodeError):
        return None
    return subject_of(event) if isinstance(event, dict) else None
