"""The commit point is the highest contiguous finished offset, checked against a brute-force model."""

from __future__ import annotations

import random

import pytest

from services.frame_path.offsets import OffsetTracker


def _brute_force_commit(started: list[int], finished: set[int]) -> int:
    """Next offset to commit: one past the last offset of the longest finished prefix of the started ones."""
    next_commit = started[0]
    for offset in started:
        if offset not in finished:
            break
        next_commit = offset + 1
    return next_commit


def test_a_commit_known_before_reading_is_not_committed_again_until_the_partition_moves() -> None:
    tracker = OffsetTracker()
    tracker.mark_committed({0: 10})  # what the partition's previous reader committed
    assert tracker.committable() == {}
    tracker.start(0, 10)
    assert tracker.committable() == {}
    tracker.finish(0, 10)
    assert tracker.committable() == {0: 11}


def test_out_of_order_finishes_commit_only_the_contiguous_prefix() -> None:
    tracker = OffsetTracker()
    for offset in range(10, 15):
        tracker.start(0, offset)
    assert tracker.committable() == {0: 10}  # nothing finished: resume where we started
    tracker.finish(0, 12)
    tracker.finish(0, 13)
    assert tracker.committable() == {0: 10}
    tracker.finish(0, 10)
    assert tracker.committable() == {0: 11}
    tracker.finish(0, 11)
    assert tracker.committable() == {0: 14}
    assert tracker.in_flight(0) == 1
    tracker.mark_committed({0: 14})
    assert tracker.committable() == {}
    tracker.finish(0, 14)
    assert tracker.committable() == {0: 15}
    assert tracker.in_flight() == 0


def test_gaps_in_offsets_do_not_block_the_commit_point() -> None:
    tracker = OffsetTracker()
    for offset in (3, 7, 8):  # 4-6 are transaction markers or compacted away
        tracker.start(1, offset)
    tracker.finish(1, 7)
    assert tracker.committable() == {1: 3}
    tracker.finish(1, 3)
    assert tracker.committable() == {1: 8}


def test_partitions_are_independent_and_forget_drops_one() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 0)
    tracker.start(1, 100)
    tracker.finish(1, 100)
    assert tracker.committable() == {0: 0, 1: 101}
    tracker.forget(0)
    assert tracker.committable() == {1: 101}
    assert tracker.in_flight() == 0


def test_misuse_is_refused_and_double_finish_is_harmless() -> None:
    tracker = OffsetTracker()
    tracker.start(0, 5)
    with pytest.raises(ValueError, match="started after"):
        tracker.start(0, 5)
    with pytest.raises(KeyError, match="never started"):
        tracker.finish(0, 6)
    with pytest.raises(KeyError, match="never started"):
        tracker.finish(2, 0)
    tracker.finish(0, 5)
    tracker.finish(0, 5)
    assert tracker.committable() == {0: 6}


@pytest.mark.parametrize("seed", range(20))
def test_random_schedules_match_the_brute_force_model(seed: int) -> None:
    rng = random.Random(seed)
    started = sorted(rng.sample(range(200), 40))
    order = started[:]
    rng.shuffle(order)
    tracker = OffsetTracker()
    for offset in started:
        tracker.start(0, offset)
    finished: set[int] = set()
    for offset in order:
        tracker.finish(0, offset)
        finished.add(offset)
        assert tracker.committable() == {0: _brute_force_commit(started, finished)}
