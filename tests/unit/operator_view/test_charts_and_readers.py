"""Chart geometry and the tolerant readers of result fields, against hand-computed values."""

from __future__ import annotations

from services.operator_view.charts import SERIES, sparkline_svg
from services.read_models import boxes_of, decision_of, text_fields


def test_sparkline_maps_time_and_value_to_the_box() -> None:
    svg = sparkline_svg([(100.0, 0.0), (110.0, 2.0), (120.0, 4.0)], width=101, height=41)
    # x: 0, 50, 100 across 0..100; y: value 0 at the bottom (40), the max (4) at the top (0).
    assert 'points="0.0,40.0 50.0,20.0 100.0,0.0"' in svg
    assert "no data" in sparkline_svg([])


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
