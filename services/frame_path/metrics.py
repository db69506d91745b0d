"""The pipeline's custom metrics, exported through Ray's metrics agent to the dashboard and Prometheus.

Why one module: ingest actors and Serve replicas report into the same metric names and tags, and the
Grafana dashboard in ``deploy/`` reads exactly these names (Ray exports them with a ``ray_`` prefix, and
counters with a ``_total`` suffix). Metric objects are created lazily inside the Ray process that reports,
because ``ray.util.metrics`` needs a connected Ray worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from zsad_core.method_names import score_range

if TYPE_CHECKING:
    from services.config import ZsadConfig

LATENCY_BOUNDARIES_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
BATCH_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128]
STAGES = ("decode", "queue", "inference", "store")
# Twenty equal buckets across each configured method's score range (docs/methods.md) show a camera's score
# distribution next to its threshold and make a drift visible on the dashboard.
SCORE_BUCKETS = 20
PROBABILITY_RANGE = (0.0, 1.0)
SCORE_BOUNDARIES = [round(0.05 * step, 2) for step in range(1, 20)]


def score_boundaries(ranges: Iterable[tuple[float, float]]) -> list[float]:
    """Bucket boundaries of the image-score histogram: twenty equal buckets over each range, merged.

    One histogram serves every camera, so the boundaries are the union over the methods' ranges. Ray takes
    positive boundaries only, so a range reaching below 0 is split over its positive part and every score at
    or below the smallest boundary shares the first bucket.
    """
    merged: set[float] = set()
    for low, high in ranges:
        low = max(low, 0.0)
        step = (high - low) / SCORE_BUCKETS
        merged.update(round(low + step * index, 6) for index in range(1, SCORE_BUCKETS))
    return sorted(value for value in merged if value > 0.0) or SCORE_BOUNDARIES


def camera_score_ranges(config: ZsadConfig) -> list[tuple[float, float]]:
    """The score range of each configured camera's method: a third-party method's is unknown, so ``[0, 1]``;
    a camera with references also gets ``[0, 1]``, where its cosine distances lie."""
    ranges = []
    for camera in config.cameras.values():
        known = score_range(camera.method)
        ranges.append(known.bounds(camera.options) if known is not None else PROBABILITY_RANGE)
        if camera.references is not None:
            ranges.append(PROBABILITY_RANGE)
    return ranges
DECISIONS = ("pass", "reject", "paused")


class PipelineMetrics:
    """Counters, histograms and gauges of frames, latencies, batches, lag and prompt versions.

    Args:
        config: gives the score histogram's buckets (:func:`camera_score_ranges`); every process reporting
            into it must pass the same configuration. ``None``: buckets for scores in ``[0, 1]``.
    """

    def __init__(self, config: ZsadConfig | None = None) -> None:
        ranges = camera_score_ranges(config) if config is not None else [PROBABILITY_RANGE]
        self.score_boundaries = score_boundaries(ranges)

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
            "frame_id_conflicts": Counter(
                "zsad_frame_id_conflicts",
                "Frames whose id had a result for other bytes: won (read earlier, the stored result was replaced) or "
                "lost (read later, refused and dead-lettered).",
                tag_keys=("camera", "outcome"),
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
            "batch": Histogram("zsad_batch_size", "Frames per camera group scored together (one head call).",
                               boundaries=BATCH_BOUNDARIES),
            "vision_batch": Histogram("zsad_vision_batch_size", "Frames per image-stage (vision tower) forward.",
                                      boundaries=BATCH_BOUNDARIES),
            "stage_forwards": Histogram(
                "zsad_image_stage_forwards", "Image-stage forwards per replica batch: one per distinct vision path.",
                boundaries=BATCH_BOUNDARIES,
            ),
            "lag": Gauge("zsad_consumer_lag", "Records behind the end of the partition.", tag_keys=("partition",)),
            "in_flight": Gauge("zsad_ingest_in_flight", "Frames sent to serving, not yet acknowledged.",
                               tag_keys=("actor",)),
            "prompt_failures": Counter(
                "zsad_prompt_load_failures", "Prompt versions a replica refused to load (it kept the old one).",
                tag_keys=("method", "reason"),
            ),
            "image_score": Histogram(
                "zsad_image_score", "Image scores of stored frames.", boundaries=self.score_boundaries,
                tag_keys=("camera",),
            ),
            "decisions": Counter(
                "zsad_decisions", "Frames by decision: pass, reject (score at or above the threshold), paused.",
                tag_keys=("camera", "decision"),
            ),
            "drift_statistic": Gauge(
                "zsad_drift_statistic", "PSI of the recent image scores against the calibration set.",
                tag_keys=("camera",),
            ),
            "threshold": Gauge(
                "zsad_camera_threshold", "The image or pixel threshold a camera is served with.",
                tag_keys=("camera", "kind"),
            ),
            "drift_alarm": Gauge("zsad_drift_alarm", "1 while a camera's scores have drifted.", tag_keys=("camera",)),
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
            "weights": Gauge(
                "zsad_backbone_weights_info", "1 per backbone a replica serves, labelled with where its weights "
                "came from (random, tag, file, hf): random means the decisions are noise.",
                tag_keys=("replica", "backbone", "weights"),
            ),
            "model_failures": Gauge(
                "zsad_replica_model_failures", "Consecutive batches the model failed on, per replica.",
                tag_keys=("replica",),
            ),
        }  # fmt: skip

    def stored(self, camera: str, method: str, anomalous: bool, end_to_end_s: float | None) -> None:
        """One frame's result was written; ``end_to_end_s`` is ``None`` when the frame has no capture time (0)."""
        self._metrics["processed"].inc(1, tags={"camera": camera, "method": method})
        if anomalous:
            self._metrics["anomalous"].inc(1, tags={"camera": camera})
        if end_to_end_s is not None:
            self._metrics["end_to_end"].observe(max(end_to_end_s, 0.0), tags={"camera": camera})

    def duplicate(self, camera: str) -> None:
        """A re-delivered frame was skipped."""
        self._metrics["duplicates"].inc(1, tags={"camera": camera})

    def frame_id_conflict(self, camera: str, *, won: bool) -> None:
        """A frame reused a stored frame id for other bytes: ``won`` replaced the stored result, else it was refused."""
        self._metrics["frame_id_conflicts"].inc(1, tags={"camera": camera, "outcome": "won" if won else "lost"})

    def dead_lettered(self, camera: str, reason: str) -> None:
        """A frame went to the dead-letter topic (``camera`` is ``unknown`` when its key was unreadable)."""
        self._metrics["dead_lettered"].inc(1, tags={"camera": camera, "reason": reason})

    def stage(self, stage: str, seconds: float) -> None:
        """Time spent in one of :data:`STAGES`."""
        self._metrics["stage"].observe(max(seconds, 0.0), tags={"stage": stage})

    def batch(self, size: int) -> None:
        """A camera group's ``size`` frames scored together (its head; the image stage may span groups)."""
        self._metrics["batch"].observe(size)

    def image_stages(self, forward_sizes: list[int]) -> None:
        """A batch's image-stage forwards, each over ``size`` frames of every camera on its vision path."""
        self._metrics["stage_forwards"].observe(len(forward_sizes))
        for size in forward_sizes:
            self._metrics["vision_batch"].observe(size)

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

    def backbone_weights(self, replica: str, backbone: str, source: str) -> None:
        """A replica built ``backbone`` with weights from ``source`` (``random`` when nobody supplied any)."""
        self._metrics["weights"].set(1, tags={"replica": replica, "backbone": backbone, "weights": source})

    def decided(self, camera: str, decision: str, score: float | None = None) -> None:
        """A frame's decision (one of :data:`DECISIONS`) and, when it was scored, its image score."""
        self._metrics["decisions"].inc(1, tags={"camera": camera, "decision": decision})
        if score is not None:
            self._metrics["image_score"].observe(score, tags={"camera": camera})

    def drift(self, camera: str, statistic: float, drifted: bool) -> None:
        """The latest drift statistic of a camera's rolling score window and whether it counts as drift."""
        self._metrics["drift_statistic"].set(statistic, tags={"camera": camera})
        self._metrics["drift_alarm"].set(1 if drifted else 0, tags={"camera": camera})

    def thresholds(self, camera: str, image: float, pixel: float | None) -> None:
        """The thresholds a replica applies to a camera now (after a calibration or a settings change)."""
        self._metrics["threshold"].set(image, tags={"camera": camera, "kind": "image"})
        if pixel is not None:
            self._metrics["threshold"].set(pixel, tags={"camera": camera, "kind": "pixel"})
