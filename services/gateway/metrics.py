"""The gateway's Prometheus metrics, served by the gateway process itself.

Why prometheus_client and not Ray's metrics like the pipeline: a gateway runs on a camera PC near the line where
only Kafka is reachable, with no Ray. Each gateway has its own registry, so several gateways in one process
(``zsad gateway`` from a config with many sources, or the tests) never clash over a metric name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

CAPTURE_TO_ACK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class GatewayMetrics:
    """Frames captured, sent, spooled and failed (by reason), spool bytes, reconnects, capture-to-ack latency."""

    def __init__(self, camera: str, registry: CollectorRegistry | None = None):
        self.camera = camera
        self.registry = registry or CollectorRegistry()
        labels = ("camera",)
        self._captured = Counter("zsad_gateway_frames_captured", "Frames read from the source.", labels,
                                 registry=self.registry)  # fmt: skip
        self._sent = Counter("zsad_gateway_frames_sent", "Frames the broker acknowledged.", labels,
                             registry=self.registry)  # fmt: skip
        self._spooled = Counter("zsad_gateway_frames_spooled", "Frames written to the disk spool.", labels,
                                registry=self.registry)  # fmt: skip
        self._failed = Counter("zsad_gateway_frames_failed", "Frames not sent, by reason.", (*labels, "reason"),
                               registry=self.registry)  # fmt: skip
        self._spool_bytes = Gauge("zsad_gateway_spool_bytes", "Bytes in the disk spool.", labels,
                                  registry=self.registry)  # fmt: skip
        self._reconnects = Counter("zsad_gateway_source_reconnects", "Reconnections to the source.", labels,
                                   registry=self.registry)  # fmt: skip
        self._latency = Histogram("zsad_gateway_capture_to_ack_seconds", "Capture to broker acknowledgement.",
                                  labels, buckets=CAPTURE_TO_ACK_BUCKETS_S, registry=self.registry)  # fmt: skip

    def captured(self) -> None:
        """A frame was read from the source."""
        self._captured.labels(self.camera).inc()

    def sent(self, seconds_since_capture: float) -> None:
        """The broker acknowledged a frame taken ``seconds_since_capture`` ago."""
        self._sent.labels(self.camera).inc()
        self._latency.labels(self.camera).observe(max(0.0, seconds_since_capture))

    def spooled(self, spool_bytes: int) -> None:
        """A frame went to the spool, which now holds ``spool_bytes``."""
        self._spooled.labels(self.camera).inc()
        self.spool_bytes(spool_bytes)

    def spool_bytes(self, value: int) -> None:
        """The spool's current size."""
        self._spool_bytes.labels(self.camera).set(value)

    def failed(self, reason: str) -> None:
        """A frame was not sent (``reason``: an error's code, or ``spool_full``)."""
        self._failed.labels(self.camera, reason).inc()

    def reconnected(self) -> None:
        """The source was opened again after a drop."""
        self._reconnects.labels(self.camera).inc()

    def totals(self) -> dict[str, float]:
        """Frames captured, sent, spooled and failed (all reasons) so far, and the spool's bytes: the heartbeat's
        counts (:mod:`services.gateway.heartbeat`)."""
        failed = sum(sample.value for metric in self._failed.collect() for sample in metric.samples
                     if sample.name.endswith("_total"))  # fmt: skip
        return {
            "captured": self.value("zsad_gateway_frames_captured_total"),
            "sent": self.value("zsad_gateway_frames_sent_total"),
            "spooled": self.value("zsad_gateway_frames_spooled_total"),
            "failed": failed,
            "spool_bytes": self.value("zsad_gateway_spool_bytes"),
        }

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 when absent), as a scrape of this gateway would show it."""
        return self.registry.get_sample_value(name, {"camera": self.camera, **labels}) or 0.0


def serve_metrics(metrics: GatewayMetrics, port: int, host: str = "127.0.0.1") -> None:
    """Expose ``metrics`` on ``http://host:port/metrics`` from a daemon thread."""
    start_http_server(port, addr=host, registry=metrics.registry)
