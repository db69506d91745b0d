"""``zsad status`` shows an ingest loop's current failure while it lasts, and only as history once it recovered."""

from __future__ import annotations

from services.cli.summaries import format_ingest_actor

BASE = {"name": "zsad-ingest-g1-0", "partitions": [0, 1], "in_flight": 0, "counts": {"stored": 5},
        "committed": {0: 3, 1: 2}}  # fmt: skip


def test_a_crashed_loop_shows_its_error_and_when_it_restarts() -> None:
    error = "KafkaConnectionError: broker away"
    line = format_ingest_actor({**BASE, "loop_state": "backing_off", "restart_in_s": 4.2, "loop_restarts": 2,
                                "error": error, "last_error": error, "last_error_age_s": 1.0})  # fmt: skip
    assert "loop backing_off (restart in 4 s)" in line
    assert "ERROR KafkaConnectionError: broker away" in line and "recovered" not in line


def test_a_recovered_loop_no_longer_reads_as_failing() -> None:
    line = format_ingest_actor({**BASE, "loop_state": "running", "loop_restarts": 1, "error": "",
                                "last_error": "KafkaConnectionError: broker away",
                                "last_error_age_s": 125.0})  # fmt: skip
    assert "ERROR" not in line
    assert "recovered from: KafkaConnectionError: broker away (125 s ago)" in line and "1 loop restarts" in line


def test_stopped_partitions_and_records_lost_by_the_broker_are_named() -> None:
    line = format_ingest_actor({**BASE, "stopped_partitions": {0: "position 100 outside the log [0, 5)"},
                                "committed_past_end": {1: 7}})  # fmt: skip
    assert "partition 0 STOPPED: position 100 outside the log [0, 5)" in line
    assert "partition 1: committed 7 past the log end" in line


def test_an_unreachable_actor_says_so() -> None:
    line = format_ingest_actor({"error": "GetTimeoutError: timed out"})
    assert line == "ingest actor unreachable: GetTimeoutError: timed out"
