"""The dead-letter ledger kept in commit metadata: what a reader learns from what a writer committed."""

from __future__ import annotations

from services.frame_path.letter_ledger import MAX_LETTERED_IN_METADATA, PartitionLedger, parse_metadata

KAFKA_DEFAULT_METADATA_LIMIT = 4096  # offset.metadata.max.bytes of Apache Kafka brokers


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


def test_metadata_stays_under_the_brokers_limit_with_the_most_it_can_hold() -> None:
    ledger = PartitionLedger(lettered=set(range(10**12, 10**12 + 5 * MAX_LETTERED_IN_METADATA)))
    for offset in range(2 * 10**12, 2 * 10**12 + 64):  # a full in-flight window of bad frames
        ledger.announce(offset, {partition: 10**12 for partition in range(8)})
    metadata = ledger.metadata(0)
    assert len(metadata.encode()) < KAFKA_DEFAULT_METADATA_LIMIT
    assert len(parse_metadata(metadata, committed=0).lettered) == MAX_LETTERED_IN_METADATA


def test_metadata_of_another_tool_or_below_the_commit_point_teaches_nothing() -> None:
    assert parse_metadata("written by kcat", committed=0) == PartitionLedger()
    assert parse_metadata('{"dead_lettered": "x"}', committed=0) == PartitionLedger()
    stale = '{"dead_lettered": [3], "lettering": {"offsets": [4], "dlq_from": {"0": 1}}}'
    assert parse_metadata(stale, committed=10) == PartitionLedger()
