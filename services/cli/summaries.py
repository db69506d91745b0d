"""The live summary of ``zsad demo`` and ``zsad status``: per camera, frames, anomalies and latencies; and where
the local stack's endpoints are.

Read from Redis (the results are the truth, whatever ingest believes): the score set counts stored frames,
the event stream gives the recent results' decisions and end-to-end latencies (capture to Redis write).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np

from services.stores.event_windows import read_event_windows
from services.stores.result_store import ResultStore

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


def camera_summaries(store: ResultStore, cameras: Sequence[str], recent: int = RECENT_EVENTS) -> list[CameraSummary]:
    """Counts and latency percentiles of each camera (zeros where it has no results yet), in one Redis round trip
    whatever the number of cameras."""
    windows = read_event_windows(store.client, cameras, recent)
    rows = []
    for camera in cameras:
        window = windows[camera]
        latencies = [(w - c) * 1000.0 for w, c in zip(window.write_ts, window.capture_ts, strict=True)
                     if w is not None and c is not None and c > 0]  # fmt: skip
        p50, p95, p99 = np.percentile(latencies, [50, 95, 99]) if latencies else (0.0, 0.0, 0.0)
        rows.append(CameraSummary(camera, window.stored, sum(window.rejected), float(p50), float(p95), float(p99)))
    return rows


def format_summary(
    rows: list[CameraSummary], rates: dict[str, float] | None = None, states: Mapping[str, str] | None = None
) -> str:
    """A fixed-width table; ``rates`` adds a frames/s column, ``states`` a state column."""
    header = f"{'camera':<16}{'frames':>8}{'fr/s':>8}{'anomalous':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    lines = [header + ("  state" if states is not None else "")]
    for row in rows:
        rate = f"{rates.get(row.camera, 0.0):.1f}" if rates is not None else "-"
        lines.append(
            f"{row.camera:<16}{row.frames:>8}{rate:>8}{row.anomalies:>11}"
            f"{row.p50_ms:>9.0f}{row.p95_ms:>9.0f}{row.p99_ms:>9.0f}"
            + (f"  {states.get(row.camera, '-')}" if states is not None else "")
        )
    return "\n".join(lines)


def redraw(stream: TextIO, text: str, previous_lines: int) -> int:
    """Write ``text`` over the ``previous_lines`` lines written last time (a terminal), else below them.

    Why: a live summary redrawn every few seconds is one view that updates in place on a terminal, instead of
    a scrolling wall of tables; in a log file (not a terminal) each summary is simply appended.
    """
    if previous_lines and stream.isatty():
        stream.write(f"\x1b[{previous_lines}F\x1b[J")  # cursor to the start of the old view, clear below
    stream.write(text + "\n")
    stream.flush()
    return text.count("\n") + 1


def format_progress(done: int, total: int, seconds: float, width: int = 30) -> str:
    """``[#######-------]  140/200 frames  70 %  12 s``: how far the demo is."""
    share = min(done / total, 1.0) if total else 1.0
    filled = round(share * width)
    return f"[{'#' * filled}{'-' * (width - filled)}] {done:>5}/{total} frames {share:4.0%} {seconds:5.0f} s"


def format_stack_state(state: StackState) -> str:
    """The running local stack's endpoints, and what to run next."""
    return "\n".join([
        f"dashboard   {state.dashboard_url}  (Ray's token authentication: the token is in ~/.ray/auth_token)",
        f"web view    {state.serve_url}  (tokens in {state.config_path} under view, mode 0600)",
        f"metrics     {state.metrics_url}  (Prometheus text; the dashboard's Metrics tab)",
        f"kafka       {state.kafka_bootstrap}",
        f"redis       {state.redis_url}  (password in {state.config_path}, mode 0600)",
        f"config      {state.config_path}",
        *(f"gateway     {camera} (pid {pid}, log {Path(state.config_path).parent / f'gateway-{camera}.log'})"
          for camera, pid in state.gateways.items()),
        "next: zsad produce --camera cam1 --synthetic --count 100; zsad status; zsad results --camera cam1",
    ])  # fmt: skip


def format_ingest_actor(actor: dict[str, Any]) -> str:
    """One ingest actor's line of ``zsad status``: positions, counts, and the loop's health.

    Why the two errors apart: ``error`` is the failure the loop is in now (it is cleared once a restarted loop
    polls and commits again), ``last_error`` the latest one with its age, so a recovered partition no longer
    reads as broken while the history stays visible.
    """
    if "name" not in actor:
        return f"ingest actor unreachable: {actor.get('error', '?')}"
    counts = ", ".join(f"{k} {v}" for k, v in sorted(actor.get("counts", {}).items())) or "idle"
    line = (f"{actor['name']}: partitions {actor.get('partitions')} in flight {actor.get('in_flight')}; {counts}; "
            f"committed {actor.get('committed')}")  # fmt: skip
    state = actor.get("loop_state", "running")
    if state != "running":
        wait = actor.get("restart_in_s")
        line += f"; loop {state}" + (f" (restart in {wait:.0f} s)" if wait else "")
    if actor.get("loop_restarts"):
        line += f"; {actor['loop_restarts']} loop restarts"
    if actor.get("error"):
        line += f"; ERROR {actor['error']}"
    elif actor.get("last_error"):
        line += f"; recovered from: {actor['last_error']} ({actor.get('last_error_age_s', 0):.0f} s ago)"
    for partition, why in (actor.get("stopped_partitions") or {}).items():
        line += f"; partition {partition} STOPPED: {why}"
    for partition, records in (actor.get("committed_past_end") or {}).items():
        line += f"; partition {partition}: committed {records} past the log end (records lost by the broker?)"
    return line
