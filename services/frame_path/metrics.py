"""The pipeline's custom metrics, exported through Ray's metrics agent to the dashboard and Prometheus.

Why one module: ingest actors and Serve replicas report into the same metric names and tags, and the
Grafana dashboard in ``deploy/`` reads exactly these names (Ray exports them with a ``ray_`` prefix, and
counters with a ``_total`` suffix). Metric objects are created lazily inside the Ray process that reports,
because ``ray.util.metrics`` needs a connected Ray worker.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
STAGES = ("decode", "queue", "inference", "store")


class PipelineMetrics:
    """Counters, histograms and gauges of frames, latencies, batches, lag and prompt versions."""

    @cached_property
    def _metrics(self) -> dict[str, Any]:
        from ray.util.metrics import Counter, Gauge, Histogram

        return {
            "processed": Counter(
                "zsad_frames_processed", "Frames scored and stored.", tag_keys=("camera", "method")
            ),
            "anomalous": Counter("zsad_frames_anomalous", "Stored frames at or above threshold.", tag_keys=("camera",)),
            "dead_lettered": Counter(
                "zsad_frames_dead_lettered", "Frames sent to the dead-letter topic.", tag_keys=("camera", "reason")
            ),
            "duplicates": Counter(
                "zsad_frames_duplicate", "Re-delivered frames whose result already existed.", tag_keys=("camera",)
            ),
            "end_to_end": Histogram(
                "zsad_end_to_end_latency_s",
                "Capture to Redis write, seconds.",
                boundaries=LATENCY_BOUNDARIES_S,
                tag_keys=("camera",),
            ),
            "stage": Histogram(
                "zsad_stage_latency_s",
                "Seconds per pipeline stage (decode, queue, inference, store).",
                boundaries=LATENCY_BOUNDARIES_S,
                tag_keys=("stage",),
            ),
            "batch": Histogram("zsad_batch_size", "Frames per model call.", boundaries=BATCH_BOUNDARIES),
            "lag": Gauge("zsad_consumer_lag", "Records behind the end of the partition.", tag_keys=("partition",)),
            "in_flight": Gauge("zsad_ingest_in_flight", "Frames sent to serving, not yet acknowledged.",
                               tag_keys=("actor",)),
            "prompt_failures": Counter(
                "zsad_prompt_load_failures", "Prompt versions a replica refused to load (it kept the old one).",
                tag_keys=("method", "reason"),
            ),
            "prompt": Gauge(
                "zsad_prompt_version_info", "1 for the prompt version a camera is served with.",
                tag_keys=("camera", "method", "version"),
            ),
            "offset_resets": Counter(
                "zsad_offset_resets", "Partition positions found outside the log and reset by the policy.",
                tag_keys=("partition", "policy"),
            ),
            "commit_rewinds": Counter(
                "zsad_committed_offset_rewinds", "Commits of an offset below the partition's previous commit.",
                tag_keys=("partition",),
            ),
            "log_end_rewinds": Counter(
                "zsad_log_end_rewinds", "Times a partition's log end moved backwards (the broker lost records).",
                tag_keys=("partition",),
            ),
            "past_end": Gauge(
                "zsad_committed_past_end", "Committed offset minus log end where positive (records lost).",
                tag_keys=("partition",),
            ),
            "loop_crashes": Counter(
                "zsad_ingest_loop_crashes", "Ingest loops that ended on an error (restarted with a backoff).",
                tag_keys=("actor",),
            ),
            "model_failures": Gauge(
                "zsad_replica_model_failures", "Consecutive batches the model failed on, per replica.",
                tag_keys=("replica",),
            ),
        }  # fmt: skip

    def stored(self, camera: str, method: str, anomalous: bool, end_to_end_s: float) -> None:
        """One frame's result was written."""
        self._metrics["processed"].inc(1, tags={"camera": camera, "method": method})
        if anomalous:
            self._metrics["anomalous"].inc(1, tags={"camera": camera})
        self._metrics["end_to_end"].observe(max(end_to_end_s, 0.0), tags={"camera": camera})

    def duplicate(self, camera: str) -> None:
        """A re-delivered frame was skipped."""
        self._metrics["duplicates"].inc(1, tags={"camera": camera})

    def dead_lettered(self, camera: str, reason: str) -> None:
        """A frame went to the dead-letter topic (``camera`` is ``unknown`` when its key was unreadable)."""
        self._metrics["dead_lettered"].inc(1, tags={"camera": camera, "reason": reason})

    def stage(self, stage: str, seconds: float) -> None:
        """Time spent in one of :data:`STAGES`."""
        self._metrics["stage"].observe(max(seconds, 0.0), tags={"stage": stage})

    def batch(self, size: int) -> None:
        """A model call over ``size`` frames."""
        self._metrics["batch"].observe(size)

    def lag(self, partition: int, records: int) -> None:
        """Consumer lag of one partition."""
        self._metrics["lag"].set(records, tags={"partition": str(partition)})

    def in_flight(self, actor: str, frames: int) -> None:
        """Frames an ingest actor has sent and not yet seen acknowledged."""
        self._metrics["in_flight"].set(frames, tags={"actor": actor})

    def prompt_version(self, camera: str, method: str, version: str | None, active: bool = True) -> None:
        """Mark the prompt version serving a camera (``zero-shot`` when it has none)."""
        tags = {"camera": camera, "method": method, "version": version or "zero-shot"}
        self._metrics["prompt"].set(1 if active else 0, tags=tags)

    def prompt_load_failed(self, method: str, reason: str) -> None:
        """A replica refused a new prompt version and kept serving the old one."""
        self._metrics["prompt_failures"].inc(1, tags={"method": method, "reason": reason})

    def offset_reset(self, partition: int, policy: str) -> None:
        """A partition's position was outside the log and ``policy`` was applied."""
        self._metrics["offset_resets"].inc(tags={"partition": str(partition), "policy": policy})

    def commit_rewound(self, partition: int) -> None:
        """A commit went below the partition's previous commit (after a reset to an earlier offset)."""
        self._metrics["commit_rewinds"].inc(tags={"partition": str(partition)})

    def log_end_rewound(self, partition: int) -> None:
        """The partition's log end moved backwards."""
        self._metrics["log_end_rewinds"].inc(tags={"partition": str(partition)})

    def committed_past_end(self, partition: int, records: int) -> None:
        """How far the committed offset lies past the log end (0 when it does not)."""
        self._metrics["past_end"].set(records, tags={"partition": str(partition)})

    def loop_crashed(self, actor: str) -> None:
        """An ingest loop ended on an error."""
        self._metrics["loop_crashes"].inc(tags={"actor": actor})

    def model_failures(self, replica: str, batches: int) -> None:
        """Consecutive batches on which the replica's model failed for every frame."""
        self._metrics["model_failures"].set(batches, tags={"replica": replica})
