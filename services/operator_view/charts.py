"""The overview's charts: per camera series from Prometheus's query API, drawn as inline SVG polylines.

Why server-side SVG: the page may load nothing from outside the machine (no chart library from a CDN), and
a polyline of a few hundred points is a handful of bytes; the numbers come from the same PromQL the Grafana
dashboard uses, so both show the same thing.
"""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from html import escape

CHART_WINDOW_S = 15 * 60
CHART_STEP_S = 15
CHARTS_BUDGET_S = 2.0  # every query of the page together; past it the page renders without charts
MAX_CONCURRENT_QUERIES = 16
CHART_PAD = 2  # SVG units between the line and the box's edges: the stroke (1.5) is never cut

# Titles and PromQL per chart; {camera} is a validated camera id (CAMERA_ID_PATTERN has no quotes or braces).
SERIES = {
    "frames_per_s": ("frames/s", 'sum(rate(ray_zsad_frames_processed_total{{camera="{camera}"}}[1m]))'),
    "p95_latency_s": (
        "p95 end-to-end latency (s)",
        'histogram_quantile(0.95, sum by (le) (rate(ray_zsad_end_to_end_latency_s_bucket{{camera="{camera}"}}[1m])))',
    ),
    "anomaly_rate": (
        "anomaly rate",
        'sum(rate(ray_zsad_frames_anomalous_total{{camera="{camera}"}}[1m]))'
        ' / sum(rate(ray_zsad_frames_processed_total{{camera="{camera}"}}[1m]))',
    ),
    "consumer_lag": ("consumer lag (all partitions)", "sum(max by (partition) (ray_zsad_consumer_lag))"),
    "dead_letters_per_s": ("dead letters/s", 'sum(rate(ray_zsad_frames_dead_lettered_total{{camera="{camera}"}}[1m]))'),
}


@dataclass(frozen=True)
class Chart:
    """One drawn series: its title, the newest value (``None`` without data) and the SVG markup."""

    title: str
    latest: float | None
    svg: str


def query_range(
    base_url: str, query: str, end: float, window_s: float = CHART_WINDOW_S, timeout_s: float = CHARTS_BUDGET_S
) -> list[tuple[float, float]]:
    """``(time, value)`` points of the first series ``query`` returns over the window (empty on no data).

    Raises:
        OSError: Prometheus cannot be reached or answers with an error.
    """
    params = urllib.parse.urlencode({"query": query, "start": end - window_s, "end": end, "step": CHART_STEP_S})
    url = f"{base_url.rstrip('/')}/api/v1/query_range?{params}"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - the configured Prometheus
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise OSError(f"prometheus refused the query: {body.get('error', body)}")
    results = body["data"]["result"]
    if not results:
        return []
    points = [(float(t), float(v)) for t, v in results[0]["values"]]
    return [(t, v) for t, v in points if math.isfinite(v)]


def sparkline_svg(points: list[tuple[float, float]], width: int = 240, height: int = 60) -> str:
    """An SVG polyline of ``points`` drawn inside its box: time left to right, values from 0 (or the lowest, when
    negative) at the bottom to the highest at the top.

    Why a viewBox: the SVG scales to the width of the tile that holds it (narrower than ``width`` on the overview)
    instead of spilling out of it, and every coordinate stays :data:`CHART_PAD` inside the box, so the line's
    stroke is never cut at an edge.
    """
    box = f'viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" style="display:block;width:100%"'
    if not points:
        return f'<svg {box}><text x="4" y="{height // 2}" font-size="12">no data</text></svg>'
    first, last = points[0][0], points[-1][0]
    span = (last - first) or 1.0
    low = min(0.0, min(v for _, v in points))
    top = max(v for _, v in points)
    rise = (top - low) or 1.0
    inner_w, inner_h = width - 2 * CHART_PAD, height - 2 * CHART_PAD

    def x(t: float) -> float:
        return CHART_PAD + min(max((t - first) / span, 0.0), 1.0) * inner_w

    def y(v: float) -> float:
        return CHART_PAD + (1.0 - min(max((v - low) / rise, 0.0), 1.0)) * inner_h

    coords = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
    return (
        f'<svg {box}><polyline fill="none" stroke="#1f6feb" stroke-width="1.5" '
        f'vector-effect="non-scaling-stroke" points="{coords}"/></svg>'
    )


def overview_charts(
    base_url: str, cameras: Iterable[str], now: float | None = None, budget_s: float = CHARTS_BUDGET_S
) -> dict[str, list[Chart]]:
    """Every chart of :data:`SERIES` per camera, all queried at once within ``budget_s`` in total.

    Why a budget for the whole page: Prometheus is an extra, the overview is not; five queries per camera one
    after another made a slow Prometheus hold the page for minutes. A query that fails becomes a chart saying
    why; when Prometheus is down (every query fails) or slow (some query is not answered in time) the result is
    empty and the page shows no charts.
    """
    end = time.time() if now is None else now
    queries = {(camera, title): template.format(camera=camera) for camera in cameras for title, template in
               SERIES.values()}  # fmt: skip
    if not queries:
        return {}
    pool = ThreadPoolExecutor(max_workers=min(MAX_CONCURRENT_QUERIES, len(queries)), thread_name_prefix="charts")
    try:
        futures = {pool.submit(query_range, base_url, query, end, timeout_s=budget_s): chart
                   for chart, query in queries.items()}  # fmt: skip
        _, late = wait(futures, timeout=budget_s)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # a late query ends by its own timeout, unawaited
    if late or all(future.exception() is not None for future in futures):
        return {}
    charts: dict[str, list[Chart]] = {}
    for future, (camera, title) in futures.items():
        error = future.exception()
        if isinstance(error, OSError | ValueError | KeyError):
            chart = Chart(title, None, f"<span>{escape(str(error))}</span>")
        elif error is not None:
            raise error
        else:
            points = future.result()
            chart = Chart(title, points[-1][1] if points else None, sparkline_svg(points))
        charts.setdefault(camera, []).append(chart)
    return charts
