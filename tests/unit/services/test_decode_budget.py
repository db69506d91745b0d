"""The per-actor decode budget: bounded pixels at once, big frames alone, first come first served."""

from __future__ import annotations

import threading
import time

import pytest

from services.frame_path.decode_budget import DecodeBudget


class _Holder(threading.Thread):
    """A decode that holds ``pixels`` until released; records when it got the budget."""

    def __init__(self, budget: DecodeBudget, pixels: int, log: list[str], name: str) -> None:
        super().__init__(daemon=True)
        self.budget, self.pixels, self.log, self.label = budget, pixels, log, name
        self.holding = threading.Event()
        self.release = threading.Event()

    def run(self) -> None:
        with self.budget.hold(self.pixels):
            self.log.append(self.label)
            self.holding.set()
            self.release.wait(10)


def _start(budget: DecodeBudget, pixels: int, log: list[str], name: str) -> _Holder:
    holder = _Holder(budget, pixels, log, name)
    holder.start()
    time.sleep(0.05)  # let it reach the budget, so start order is arrival order
    return holder


def test_decodes_that_fit_together_run_together_and_others_wait() -> None:
    budget, log = DecodeBudget(100), []
    a, b = _start(budget, 40, log, "a"), _start(budget, 60, log, "b")
    assert a.holding.is_set() and b.holding.is_set()
    c = _start(budget, 1, log, "c")
    assert not c.holding.is_set()  # 40 + 60 + 1 > 100
    b.release.set()
    assert c.holding.wait(2)
    a.release.set()
    c.release.set()
    assert log == ["a", "b", "c"]


def test_a_frame_larger_than_the_budget_is_decoded_alone() -> None:
    budget, log = DecodeBudget(100), []
    small = _start(budget, 10, log, "small")
    huge = _start(budget, 5_000, log, "huge")
    assert not huge.holding.is_set()
    small.release.set()
    assert huge.holding.wait(2)
    after = _start(budget, 1, log, "after")
    assert not after.holding.is_set()  # nothing runs beside it
    huge.release.set()
    assert after.holding.wait(2)
    after.release.set()
    assert log == ["small", "huge", "after"]


def test_a_waiting_large_frame_is_not_overtaken_by_later_small_ones() -> None:
    budget, log = DecodeBudget(100), []
    first = _start(budget, 50, log, "first")
    large = _start(budget, 80, log, "large")
    small = _start(budget, 10, log, "small")  # would fit now, but arrived after the large one
    assert not large.holding.is_set() and not small.holding.is_set()
    first.release.set()
    assert large.holding.wait(2) and small.holding.wait(2)
    large.release.set()
    small.release.set()
    assert log == ["first", "large", "small"]


def test_the_budget_is_returned_when_a_decode_fails() -> None:
    budget, log = DecodeBudget(100), []
    with pytest.raises(RuntimeError), budget.hold(100):
        raise RuntimeError("decoder failed")
    after = _start(budget, 100, log, "after")
    assert after.holding.wait(2)
    after.release.set()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        DecodeBudget(0)
