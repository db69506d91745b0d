"""Chart geometry and the tolerant readers of result fields, against hand-computed values."""

from __future__ import annotations

import math
import re

import pytest

from services.operator_view.charts import SERIES, sparkline_svg
from services.read_models import boxes_of, decision_of, text_fields


def _points(svg: str) -> list[tuple[float, float]]:
    coords = re.search(r'points="([^"]*)"', svg)
    assert coords is not None, svg
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in coords.group(1).split())]


def test_sparkline_maps_time_and_value_to_the_box() -> None:
    svg = sparkline_svg([(100.0, 0.0), (110.0, 2.0), (120.0, 4.0)], width=104, height=44)
    # x: 2, 52, 102 across the box less its 2-unit margin; y: value 0 at the bottom (42), the max (4) at the top (2).
    assert _points(svg) == [(2.0, 42.0), (52.0, 22.0), (102.0, 2.0)]
    assert 'viewBox="0 0 104 44"' in svg and "width:100%" in svg  # scales to its tile, never wider
    assert "no data" in sparkline_svg([])


@pytest.mark.parametrize(
    "points",
    [
        [(0.0, -3.0), (15.0, 5.0), (30.0, 1e9)],  # negative and huge values
        [(0.0, 2.0), (0.0, 2.0)],  # one instant, one value
        [(0.0, 0.0), (15.0, 0.0), (30.0, 0.0)],  # flat at zero
        [(float(t), math.sin(t)) for t in range(0, 900, 15)],
    ],
)
def test_sparkline_coordinates_stay_inside_the_viewbox(points: list[tuple[float, float]]) -> None:
    svg = sparkline_svg(points, width=240, height=60)
    width, height = (float(n) for n in re.search(r'viewBox="0 0 (\d+) (\d+)"', svg).groups())  # type: ignore[union-attr]
    for x, y in _points(svg):
        assert 0.0 < x < width and 0.0 < y < height, (x, y)


def test_every_chart_query_names_the_camera_or_is_global() -> None:
    for title, template in SERIES.values():
        query = template.format(camera="cam1")
        assert 'camera="cam1"' in query or "consumer_lag" in query, title
        assert "{" not in query.replace('{camera="cam1"}', ""), f"{title}: unformatted braces"


def test_decision_falls_back_to_the_label() -> None:
    assert decision_of({"label": "1"}) == "reject"
    assert decision_of({"label": "0"}) == "pass"
    assert decision_of({"label": "1", "decision": "review"}) == "review"


def test_boxes_are_read_from_region_rows_and_bad_input_gives_none() -> None:
    assert boxes_of({"regions": "[[1,2,3,4,12,0.9,0.5],[5,6,7,8,56,0.8,0.4]]"}) == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert boxes_of({}) == []
    assert boxes_of({"regions": "not json"}) == []
    assert boxes_of({"regions": '{"x": 1}'}) == []
    assert boxes_of({"regions": '[["a", 2, 3, 4]]'}) == []


def test_text_fields_decode_and_hide_store_internals() -> None:
    raw = {b"frame_id": b"f1", b"digest": b"abc", b"map_min": b"0.1", b"score": b"0.5"}
    assert text_fields(raw) == {"frame_id": "f1", "score": "0.5"}
