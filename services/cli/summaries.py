"""The live summary of ``zsad demo`` and ``zsad status``: per camera, frames, anomalies and latencies; and where
the local stack's endpoints are.

Read from Redis (the results are the truth, whatever ingest believes): the score set counts stored frames,
the event stream gives the recent results' labels and end-to-end latencies (capture to Redis write).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from services.frame_path.result_store import ResultStore

if TYPE_CHECKING:
    from services.local_stack.stack_process import StackState

RECENT_EVENTS = 1000


@dataclass(frozen=True)
class CameraSummary:
    """One camera's numbers; latencies in milliseconds over the last :data:`RECENT_EVENTS` results."""

    camera: str
    frames: int
    anomalies: int
    p50_ms: float
    p95_ms: float
    p99_ms: float


def camera_summary(store: ResultStore, camera: str, recent: int = RECENT_EVENTS) -> CameraSummary:
    """Counts and latency percentiles of ``camera`` (zeros when it has no results yet)."""
    frames = store.count_results(camera)
    events = store.recent(camera, recent)
    anomalies = sum(event.label for event in events)
    latencies = [(event.write_ts - event.capture_ts) * 1000.0 for event in events if event.capture_ts > 0]
    if not latencies:
        return CameraSummary(camera, frames, anomalies, 0.0, 0.0, 0.0)
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    return CameraSummary(camera, frames, anomalies, float(p50), float(p95), float(p99))


def format_summary(rows: list[CameraSummary], rates: dict[str, float] | None = None) -> str:
    """A fixed-width table; ``rates`` adds a frames/s column."""
    header = f"{'camera':<16}{'frames':>8}{'fr/s':>8}{'anomalous':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    lines = [header]
    for row in rows:
        rate = f"{rates.get(row.camera, 0.0):.1f}" if rates is not None else "-"
        lines.append(
            f"{row.camera:<16}{row.frames:>8}{rate:>8}{row.anomalies:>11}"
            f"{row.p50_ms:>9.0f}{row.p95_ms:>9.0f}{row.p99_ms:>9.0f}"
        )
    return "\n".join(lines)


def format_stack_state(state: StackState) -> str:
    """The running local stack's endpoints, and what to run next."""
    return "\n".join([
        f"dashboard   {state.dashboard_url}  (Ray's token authentication: the token is in ~/.ray/auth_token)",
        f"web view    {state.serve_url}  (tokens in {state.config_path} under view, mode 0600)",
        f"metrics     {state.metrics_url}  (Prometheus text; the dashboard's Metrics tab)",
        f"kafka       {state.kafka_bootstrap}",
        f"redis       {state.redis_url}  (password in {state.config_path}, mode 0600)",
        f"config      {state.config_path}",
        "next: zsad produce --camera cam1 --synthetic --count 100; zsad status; zsad results --camera cam1",
    ])  # fmt: skip
