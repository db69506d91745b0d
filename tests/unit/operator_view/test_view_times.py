"""The view shows times as ISO 8601 (UTC in the HTML, the browser's zone once base.html's script ran), never
raw Unix seconds."""

from __future__ import annotations

import datetime as dt
import re
from types import SimpleNamespace

from services.operator_view.app import _templates
from services.read_models import time_element

VIEWER = SimpleNamespace(role=SimpleNamespace(value="viewer"), csrf=None)


def _times(html: str) -> list[str]:
    return re.findall(r'<time datetime="([^"]+)"', html)


def test_unix_seconds_and_iso_strings_become_time_elements() -> None:
    assert str(time_element("1765000000.25")) == ('<time datetime="2025-12-06T05:46:40.250Z" '
                                                   'title="2025-12-06T05:46:40.250Z">2025-12-06T05:46:40.250Z</time>')
    assert _times(str(time_element("2026-12-07T02:57:04.123+00:00"))) == ["2026-12-07T02:57:04.123Z"]
    assert _times(str(time_element("2026-12-07T03:57:04+01:00"))) == ["2026-12-07T02:57:04.000Z"]
    assert str(time_element("0")) == "0"  # never set: shown as stored
    assert str(time_element("<b>")) == "&lt;b&gt;"


def test_the_frame_page_shows_its_timestamps_as_iso_8601() -> None:
    fields = {"frame_id": "f1", "score": "0.4", "capture_ts": "1765000000.5", "write_ts": "1765000001.0",
              "inference_ms": "12.5"}  # fmt: skip
    timings = {name: fields[name] for name in ("capture_ts", "write_ts", "inference_ms")}
    html = _templates().get_template("frame.html").render(base="", principal=VIEWER, csrf_field="csrf",
                                                          camera="cam1", fields=fields, decision="pass", boxes=[],
                                                          timings=timings)  # fmt: skip
    stamps = _times(html)
    assert stamps == ["2025-12-06T05:46:40.500Z", "2025-12-06T05:46:41.000Z"]
    assert all(dt.datetime.fromisoformat(stamp).tzinfo is not None for stamp in stamps)
    assert ">1765000000.5<" not in html and "12.5" in html  # durations stay numbers
    assert 'querySelectorAll("time[datetime]")' in html and "getTimezoneOffset" in html  # shown in the browser's zone


def test_the_registry_page_shows_creation_and_audit_times_as_iso_8601() -> None:
    entries = [{"method": "clip-ad+", "version": "v1", "metrics": {}, "created_at": "2026-12-07T02:57:04.123+00:00"}]
    audit = [{"id": "1-0", "action": "promote", "ts": "2026-12-07T03:00:00.000+00:00"}]
    html = _templates().get_template("registry.html").render(base="", principal=VIEWER, csrf_field="csrf",
                                                             aliases={}, entries=entries, audit=audit)  # fmt: skip
    assert _times(html) == ["2026-12-07T02:57:04.123Z", "2026-12-07T03:00:00.000Z"]
    assert "action=promote" in html


def test_the_overview_title_holds_no_chart_markup() -> None:
    chart = SimpleNamespace(title="frames/s", latest=1.0, svg="<svg></svg>")
    html = _templates().get_template("overview.html").render(base="", principal=VIEWER, csrf_field="csrf", rows=[],
                                                             ingest={"actors": []}, charts={"cam1": [chart]})
    title = re.search(r"<title>(.*?)</title>", html, re.S)
    assert title is not None and title.group(1) == "zsad cameras"
    assert html.count("<svg></svg>") == 1
