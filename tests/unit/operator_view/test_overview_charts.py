"""The overview's charts stay within one short budget whatever Prometheus does."""

from __future__ import annotations

import socket
import time

from services.operator_view.charts import overview_charts

CAMERAS = ["cam1", "cam2", "cam3"]


def test_a_prometheus_that_never_answers_costs_the_page_one_budget_and_no_charts() -> None:
    with socket.socket() as silent:  # accepts connections (the kernel's backlog), never answers a request
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        start = time.monotonic()
        charts = overview_charts(f"http://127.0.0.1:{silent.getsockname()[1]}", CAMERAS, budget_s=0.5)
        elapsed = time.monotonic() - start
    assert charts == {}
    assert elapsed < 2.0  # one query after another, 15 of them would wait 7.5 s at least


def test_a_prometheus_that_is_down_gives_no_charts() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed once the block ends: connections are refused
    assert overview_charts(f"http://127.0.0.1:{port}", CAMERAS, budget_s=0.5) == {}
