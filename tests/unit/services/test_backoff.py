"""The one retry backoff: doubling, capped, jittered so that retries of many tasks spread out."""

from __future__ import annotations

import pytest

from services.backoff import backoff_s


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.1), (2, 0.2), (4, 0.8), (7, 5.0), (10_000, 5.0)])
def test_the_wait_doubles_per_attempt_up_to_the_cap_and_keeps_at_least_half(attempt: int, ceiling: float) -> None:
    waits = [backoff_s(attempt, 0.1, 5.0) for _ in range(200)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)


def test_retries_at_the_same_attempt_do_not_wait_in_lockstep() -> None:
    waits = {backoff_s(3, 1.0, 60.0) for _ in range(50)}
    assert len(waits) > 40 and max(waits) - min(waits) > 0.5


def test_an_attempt_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="attempt must be 1 or more, got 0"):
        backoff_s(0, 0.1, 5.0)
