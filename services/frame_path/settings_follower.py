"""The replica side of live camera settings: a follower that hands each camera's new settings to a replica.

Why apart from the store (:mod:`services.stores.camera_settings`): the store is read and written by the command
line, the web view and calibration without a thread; only serving processes (an inspector replica, an ingest actor)
follow the changes, in a thread of their own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import redis

from services.event_follower import CHECK_EVERY_S, EventFollower
from services.stores.camera_settings import CameraSettings, CameraSettingsStore

log = logging.getLogger(__name__)


class CameraSettingsFollower:
    """Calls ``on_change`` with a camera's new settings whenever they change: the replica side of live settings.

    An :class:`~services.event_follower.EventFollower` on the registry's events channel (with its periodic
    re-read); ``on_change`` runs in the follower's thread and only for versions that differ from the last one it
    was given (it is called once at start with the current settings). A camera whose settings cannot be read or
    applied keeps its last ones (logged, retried at the next re-read) and never holds back the other cameras.

    Args:
        store: where settings live.
        cameras: the cameras this replica serves.
        on_change: receives each new :class:`CameraSettings`.
        check_every_s: the fallback re-read interval.
    """

    def __init__(
        self,
        store: CameraSettingsStore,
        cameras: Iterable[str],
        on_change: Callable[[CameraSettings], None],
        *,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.store = store
        self.cameras = tuple(cameras)
        self.on_change = on_change
        self._seen: dict[str, str | None] = {}
        self._events = EventFollower(store.client, store.registry.events_channel, subject_of=_event_camera,
                                     check=self._check, name="camera-settings-follower",
                                     check_every_s=check_every_s)  # fmt: skip

    def start(self) -> CameraSettingsFollower:
        """Subscribe and start following in a daemon thread."""
        self._events.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop following."""
        self._events.stop(timeout_s)

    def _check(self, camera: str | None) -> None:
        if camera is None:
            self.refresh(self.cameras)
        elif camera in self.cameras:
            self.refresh([camera])

    def refresh(self, cameras: Iterable[str]) -> None:
        """Re-read ``cameras`` and hand on the settings whose version changed, one camera at a time.

        Raises:
            redis.RedisError: Redis is unreachable (nothing more can be read; the follower subscribes again).
        """
        for camera in cameras:
            try:
                settings = self.store.settings(camera)
                if camera in self._seen and self._seen[camera] == settings.version:
                    continue
                self.on_change(settings)
            except redis.RedisError:
                raise
            except Exception as exc:  # noqa: BLE001 - this camera's record or its application is bad, not the others
                log.warning("%s: cannot apply its live settings, keeping the last ones: %s", camera, exc)
                continue
            self._seen[camera] = settings.version  # only once applied: a failed apply is retried


def _event_camera(event: dict[str, object]) -> str | None:
    camera = event.get("camera")
    return camera if event.get("kind") == "settings" and isinstance(camera, str) else None
