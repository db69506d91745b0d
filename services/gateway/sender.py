"""Getting a source's frames onto Kafka, at least once and in order, through the disk spool when the broker is away.

Why one thread owns the producer and the spool: order. While the spool holds anything, new frames go behind
it, and the spool is drained oldest first before anything new is sent, so a camera's frames reach its
partition in capture order even across an outage. A batch is sent and then waited for; the first frame the
broker did not acknowledge and every frame after it go to the spool (a later one that did arrive is sent
again: a duplicate by frame id, which the replica's idempotent write absorbs).

A source learns each frame's :class:`~services.gateway.frames.Outcome` through the callback it gave with the
frame, called from the sender's thread: a folder moves the file to ``done/`` only then.

What a crash (``kill -9``) loses: frames in the in-memory queue (at most ``queue_frames``) and the batch being
sent, unless they were already on disk. A folder loses nothing (its files stay until acknowledged); a stream or
camera loses those frames, since it cannot be asked for them again. Spooled frames survive a restart.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError

from services.config import KafkaConfig
from services.frame_path.producer import FrameProducer, MiB
from services.gateway.frames import GatewayFrame, Outcome, OutcomeCallback
from services.gateway.metrics import GatewayMetrics
from services.gateway.spool import DiskSpool

log = logging.getLogger(__name__)

# A broker that does not answer within these is treated as gone and the frames are spooled: short, because a
# camera keeps producing meanwhile (the producer's own defaults wait a minute and more).
PRODUCER_TIMEOUTS = {"bootstrap_timeout_ms": 5_000, "max_block_ms": 5_000, "request_timeout_ms": 5_000,
                     "delivery_timeout_ms": 10_000, "reconnect_backoff_max_ms": 1_000}
BATCH_BYTES = 64 * MiB
_IDLE_POLL_S = 0.1


class FrameSender:
    """Sends submitted frames, spooling them while the broker is unreachable.

    Args:
        kafka: the broker and the frames topic.
        spool: where frames wait for the broker.
        metrics: sent, spooled, failed (``spool_full``) and latency are counted here.
        max_frame_bytes: ``limits.max_bytes``; sources refuse larger frames before submitting.
        queue_frames: frames held in memory before :meth:`submit` blocks (backpressure on the source).
        batch_frames: frames sent before waiting for their acknowledgements.
        retry_s, max_retry_s: first and longest wait before trying an unreachable broker again.
        producer_settings: further kafka-python settings (they win over :data:`PRODUCER_TIMEOUTS`).
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        spool: DiskSpool,
        metrics: GatewayMetrics,
        *,
        max_frame_bytes: int,
        queue_frames: int = 64,
        batch_frames: int = 32,
        retry_s: float = 0.5,
        max_retry_s: float = 5.0,
        producer_settings: dict[str, Any] | None = None,
    ):
        self.kafka = kafka
        self.spool = spool
        self.metrics = metrics
        self.max_frame_bytes = max_frame_bytes
        self.batch_frames = batch_frames
        self.retry_s, self.max_retry_s = retry_s, max_retry_s
        self._settings = {**PRODUCER_TIMEOUTS, **(producer_settings or {})}
        self._queue: queue.Queue[tuple[GatewayFrame, OutcomeCallback | None]] = queue.Queue(queue_frames)
        self._callbacks: dict[str, OutcomeCallback] = {}
        self._producer: FrameProducer | None = None
        self._backoff = retry_s
        self._retry_at = 0.0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gateway-sender-{metrics.camera}", daemon=True)
        metrics.spool_bytes(spool.bytes)

    def start(self) -> None:
        """Start the sending thread."""
        self._thread.start()

    def submit(self, frame: GatewayFrame, on_outcome: OutcomeCallback | None = None) -> None:
        """Queue a frame; blocks while ``queue_frames`` frames wait (the source slows down instead of piling up)."""
        self._queue.put((frame, on_outcome))

    def stop(self, timeout_s: float | None = None) -> bool:
        """Send (or spool) what was submitted, then stop; True if the thread ended within ``timeout_s``."""
        self._stopping.set()
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                if len(self.spool) and self._broker_due():
                    self._drain_spool()
                    continue
                batch = self._take(block=not self._stopping.is_set())
                if batch:
                    if len(self.spool) or not self._broker_due():
                        self._to_spool(batch)
                    else:
                        self._send(batch)
                elif self._stopping.is_set():
                    return
        finally:
            self._close_producer()

    def _take(self, *, block: bool) -> list[tuple[GatewayFrame, OutcomeCallback | None]]:
        batch = []
        try:
            batch.append(self._queue.get(timeout=_IDLE_POLL_S) if block else self._queue.get_nowait())
            while len(batch) < self.batch_frames:
                batch.append(self._queue.get_nowait())
        except queue.Empty:
            pass
        return batch

    def _send(self, batch: list[tuple[GatewayFrame, OutcomeCallback | None]]) -> None:
        frames = [frame for frame, _ in batch]
        for frame, callback in batch:
            if callback is not None:
                self._callbacks[frame.frame_id] = callback
        delivered = self._deliver(frames)
        for frame in frames[:delivered]:
            self._acknowledged(frame)
        self._to_spool(batch[delivered:])

    def _drain_spool(self) -> None:
        entries = self.spool.oldest(self.batch_frames, BATCH_BYTES)
        delivered = self._deliver([entry.frame for entry in entries])
        self.spool.remove(entries[:delivered])
        self.metrics.spool_bytes(self.spool.bytes)
        for entry in entries[:delivered]:
            self._acknowledged(entry.frame)

    def _deliver(self, frames: Sequence[GatewayFrame]) -> int:
        """Send ``frames`` and wait; how many, from the first, the broker acknowledged."""
        producer = self._open_producer()
        if producer is None:
            return 0
        futures = []
        try:
            for frame in frames:
                futures.append(producer.send_frame(
                    frame.camera, frame.payload, frame.frame_id, frame.capture_ts, frame.content_type,
                    extra_headers=frame.extra_headers,
                ))  # fmt: skip
            producer.flush(timeout=self._settings["delivery_timeout_ms"] / 1000 + 5)
        except KafkaError as exc:
            log.warning("camera %s: broker did not take the frames: %s", self.metrics.camera, exc)
        delivered = 0
        for future in futures:
            if not (future.is_done and future.succeeded()):
                break
            delivered += 1
        if delivered < len(frames):
            self._broker_down()
        else:
            self._backoff = self.retry_s
        return delivered

    def _to_spool(self, batch: Sequence[tuple[GatewayFrame, OutcomeCallback | None]]) -> None:
        for frame, callback in batch:
            if self.spool.append(frame):
                self.metrics.spooled(self.spool.bytes)
                if callback is not None:
                    self._callbacks[frame.frame_id] = callback
                continue
            self.metrics.failed("spool_full")
            self._callbacks.pop(frame.frame_id, None)
            if callback is not None:
                callback(frame, Outcome.REFUSED)

    def _acknowledged(self, frame: GatewayFrame) -> None:
        self.metrics.sent(time.time() - frame.capture_ts)
        callback = self._callbacks.pop(frame.frame_id, None)
        if callback is not None:
            callback(frame, Outcome.ACKNOWLEDGED)

    def _broker_due(self) -> bool:
        return time.monotonic() >= self._retry_at

    def _broker_down(self) -> None:
        """Drop the producer (its idempotence state may not survive a broker restart) and wait before retrying."""
        self._close_producer()
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.max_retry_s)

    def _open_producer(self) -> FrameProducer | None:
        if self._producer is None:
            try:
                self._producer = FrameProducer(self.kafka, max_frame_bytes=self.max_frame_bytes, **self._settings)
            except KafkaError as exc:
                log.warning("camera %s: broker unreachable (%s); spooling", self.metrics.camera, exc)
                self._broker_down()
        return self._producer

    def _close_producer(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                producer.close(timeout=0)
            except KafkaError as exc:
                log.debug("closing the producer: %s", exc)
