"""The dead-letter ledger kept in commit metadata: what a reader learns from what a writer committed."""

from __future__ import annotations

from services.config import MAX_IN_FLIGHT
from services.frame_path.letter_ledger import PartitionLedger, parse_metadata

KAFKA_DEFAULT_METADATA_LIMIT = 4096  # offset.metadata.max.bytes of Apache Kafka brokers
LARGEST_OFFSET = 2**63 - 1  # Kafka offsets are signed 64-bit: 19 digits


def test_an_announced_letter_travels_with_the_topic_end_of_its_first_announcement() -> None:
    ledger = PartitionLedger()
    ledger.announce(7, {0: 40, 1: 12})
    ledger.announce(9, {0: 41, 1: 12})  # later positions would miss a letter of offset 7 written in between
    read = parse_metadata(ledger.metadata(5), committed=5)
    assert read.announced == {7, 9} and read.dlq_from == {0: 40, 1: 12} and read.lettered == set()


def test_an_acknowledged_letter_moves_from_announced_to_lettered_and_drops_below_the_commit_point() -> None:
    ledger = PartitionLedger()
    ledger.announce(7, {0: 40})
    ledger.acknowledged(7)
    assert parse_metadata(ledger.metadata(5), committed=5) == PartitionLedger(lettered={7})
    assert ledger.metadata(8) == ""  # the commit point passed it: nothing left to say
    assert 7 not in ledger


def test_metadata_fits_the_brokers_limit_in_the_worst_case_at_the_largest_window() -> None:
    lowest = LARGEST_OFFSET - 10_000
    ledger = PartitionLedger(lettered=set(range(lowest, lowest + 1_000)))  # acknowledged, above a stuck frame
    window = range(LARGEST_OFFSET - MAX_IN_FLIGHT, LARGEST_OFFSET)  # every frame in flight is being lettered
    for offset in window:
        ledger.announce(offset, {partition: LARGEST_OFFSET for partition in range(64)})  # a wide dead-letter topic
    metadata = ledger.metadata(lowest)
    assert len(metadata.encode()) <= KAFKA_DEFAULT_METADATA_LIMIT
    read = parse_metadata(metadata, committed=lowest)
    assert read.announced == set(window)  # every announcement travels: the next reader looks each one up
    assert read.dlq_from == dict.fromkeys(range(64), LARGEST_OFFSET)  # and knows where to start looking
    assert 0 < len(read.lettered) < 1_000 and read.lettered == set(range(lowest, lowest + len(read.lettered)))


def test_positions_that_do_not_fit_are_left_out_and_searched_from_the_start() -> None:
    ledger = PartitionLedger()
    ledger.announce(LARGEST_OFFSET, dict.fromkeys(range(1_000), LARGEST_OFFSET))
    metadata = ledger.metadata(0)
    read = parse_metadata(metadata, committed=0)
    assert len(metadata.encode()) <= KAFKA_DEFAULT_METADATA_LIMIT and read.announced == {LARGEST_OFFSET}
    assert 64 < len(read.dlq_from) < 1_000 and set(read.dlq_from) == set(range(len(read.dlq_from)))


def test_metadata_keeps_everything_when_it_fits() -> None:
    ledger = PartitionLedger(lettered={12, 15})
    ledger.announce(20, {0: 40, 1: 12})
    read = parse_metadata(ledger.metadata(10), committed=10)
    assert read == PartitionLedger(lettered={12, 15}, announced={20}, dlq_from={0: 40, 1: 12})


def test_metadata_of_another_tool_or_below_the_commit_point_teaches_nothing() -> None:
    assert parse_metadata("written by kcat", committed=0) == PartitionLedger()
    assert parse_metadata('{"dead_lettered": "x"}', committed=0) == PartitionLedger()
    stale = '{"dead_lettered": [3], "lettering": {"offsets": [4], "dlq_from": {"0": 1}}}'
    assert parse_metadata(stale, committed=10) == PartitionLedger()
