"""The Ray actor that runs one ingest loop, restarts it after a crash, and follows the cameras' live ROI.

Why apart from the loop: the loop (:mod:`services.frame_path.ingest_loop`) runs without Ray, serving passed in
as a function; the actor binds it to the Serve inspector, to Ray's metrics and to the audit stream in Redis,
and the supervisor (:mod:`services.frame_path.supervisor`) creates, watches and drains the actors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from services.audit_log import append_audit
from services.backoff import backoff_s
from services.config import ZsadConfig
from services.frame_path.decoding import FrameAck, FrameRequest
from services.frame_path.ingest_loop import IngestWorker
from services.frame_path.metrics import PipelineMetrics

log = logging.getLogger(__name__)

LOOP_BACKOFF_S = (1.0, 60.0)  # first and longest wait before a crashed loop is started again


class IngestActor:
    """The Ray actor around one :class:`IngestWorker` (created by the supervisor with restarts enabled).

    A restarted actor comes back through ``__init__`` with the same partitions; the supervisor's watch loop
    calls :meth:`ensure_running`, and the consumer resumes from the committed offsets. A loop that crashed is
    started again only after a jittered backoff that doubles with each consecutive crash (up to 1 s for the
    first, at most 60 s), so a fault that persists (a broker away) neither spins nor floods the logs (one log
    entry per crash); the state shows in :meth:`stats`.
    """

    def __init__(self, config: ZsadConfig, partitions: list[int], inspector: Any, name: str) -> None:
        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO

        async def submit(request: FrameRequest) -> FrameAck:
            return await inspector.score.remote(request)

        self.config = config
        self.metrics = PipelineMetrics(config)
        self.worker = IngestWorker(config, partitions, submit, name=name, metrics=self.metrics, audit=self._audit)
        self.follower = _follow_roi(config, self.worker)
        self._task: asyncio.Task[None] | None = None
        self._redis: Any = None
        self.crashes = 0  # consecutive: reset once a restarted loop is healthy
        self.restarts = 0
        self.last_error = ""
        self.last_error_ts = 0.0
        self._next_start = 0.0

    def _audit(self, entry: dict[str, str]) -> None:
        """Append to the audit stream that operators read (the registry's, ``zsad registry audit``)."""
        from services.stores.result_store import connect

        if self._redis is None:
            self._redis = connect(self.config.redis)
        append_audit(self._redis, self.config.registry.namespace, {**entry, "ts": repr(time.time())})

    async def ensure_running(self) -> bool:
        """Start the loop if it is not running and its backoff has passed; True if it was started now."""
        if self.worker.healthy:
            self.crashes = 0
        if self._task is not None and not self._task.done():
            return False
        if self.worker.stopping:
            return False
        if self._task is not None:  # the loop ended on its own: it crashed
            # Retrieved here, so that asyncio does not log the same crash a second time when the task is freed.
            crash = None if self._task.cancelled() else self._task.exception()
            self._task, error = None, self.worker.error
            self.crashes += 1
            self.last_error, self.last_error_ts = error, time.time()
            backoff = backoff_s(self.crashes, *LOOP_BACKOFF_S)
            self._next_start = time.monotonic() + backoff
            self.metrics.loop_crashed(self.worker.name)
            log.error("%s: ingest loop crashed (%d in a row): %s; restarting in %.1f s", self.worker.name,
                      self.crashes, error, backoff, exc_info=crash)  # fmt: skip
        if time.monotonic() < self._next_start:
            return False
        self.restarts += self._next_start > 0
        self._task = asyncio.get_running_loop().create_task(self.worker.run())
        return True

    async def stop(self, drain_timeout_s: float = 30.0) -> dict[str, Any]:
        """Stop, commit what finished and report the final stats.

        The settings follower stops alongside the drain, not before it: its thread notices the stop only at its
        next pub/sub read (up to a second), which every drain used to wait for.
        """
        await asyncio.gather(asyncio.to_thread(self.follower.stop), self.worker.stop(drain_timeout_s))
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        """The worker's counters and positions, and the loop's state (``running``, ``backing_off``, ``stopped``)."""
        stats = self.worker.stats()
        waiting = max(self._next_start - time.monotonic(), 0.0)
        running = self._task is not None and not self._task.done()
        state = "running" if running else "backing_off" if waiting > 0 else "stopped"
        stats.update(
            loop_state=state,
            loop_restarts=self.restarts,
            consecutive_crashes=self.crashes,
            restart_in_s=round(waiting, 1),
            last_error=self.last_error,
            last_error_age_s=round(time.time() - self.last_error_ts, 1) if self.last_error_ts else None,
        )
        return stats


def _follow_roi(config: ZsadConfig, worker: IngestWorker) -> Any:
    """Follow the cameras' live settings for their ROI (ingest crops before sending), as the replicas do."""
    import redis

    from services.frame_path.settings_follower import CameraSettingsFollower
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.camera_settings import CameraSettingsStore
    from services.stores.result_store import connect

    registry = ArtifactRegistry.from_config(config.registry, connect(config.redis))
    follower = CameraSettingsFollower(CameraSettingsStore(registry, config), config.cameras, worker.apply_settings)
    try:
        follower.refresh(follower.cameras)
    except redis.RedisError as exc:
        log.warning("%s: camera settings unreadable at start, cropping to the configured ROI: %s", worker.name, exc)
    return follower.start()
