"""The replica's batcher: a batch is taken when the model is free, so frames that queue behind a running batch
join the next one together, whatever groups they arrived in (Serve's ``@serve.batch`` kept those groups)."""

from __future__ import annotations

import asyncio

import pytest

from services.frame_path.batcher import FreeModelBatcher


class _Model:
    """Records each batch; each call runs until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()

    async def __call__(self, items: list[int]) -> list[str]:
        self.batches.append(items)
        await self.release.wait()
        self.release.clear()
        return [f"ack {item}" for item in items]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_frames_that_arrive_in_small_groups_while_the_model_runs_form_one_full_batch() -> None:
    async def scenario() -> list[list[int]]:
        model = _Model()
        batcher = FreeModelBatcher(model, max_batch_size=8, wait_s=0.0)
        calls = [asyncio.create_task(batcher.submit(0))]
        await _settle()  # batch [0] is running
        for group in ([1, 2, 3], [4, 5], [6, 7, 8], [9, 10]):  # as the ingest's decoders hand them over
            calls += [asyncio.create_task(batcher.submit(item)) for item in group]
            await _settle()
        for _ in range(3):
            model.release.set()
            await _settle()
        answers = await asyncio.gather(*calls)
        assert answers == [f"ack {item}" for item in range(11)]
        return model.batches

    assert asyncio.run(scenario()) == [[0], [1, 2, 3, 4, 5, 6, 7, 8], [9, 10]]


def test_a_free_model_waits_for_the_batch_to_fill_only_until_the_oldest_frame_has_waited_wait_s() -> None:
    async def scenario() -> tuple[list[list[int]], float]:
        model = _Model()
        model.release.set()
        batcher = FreeModelBatcher(model, max_batch_size=4, wait_s=0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.gather(first, second)
        return model.batches, loop.time() - started

    batches, took = asyncio.run(scenario())
    assert batches == [[1, 2]]
    assert 0.18 <= took < 1.0


def test_a_full_queue_does_not_wait() -> None:
    async def scenario() -> float:
        model = _Model()
        model.release.set()
        batcher = FreeModelBatcher(model, max_batch_size=2, wait_s=30.0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
        return loop.time() - started

    assert asyncio.run(scenario()) < 1.0


def test_what_the_model_raises_reaches_every_caller_of_that_batch_and_the_next_batch_still_runs() -> None:
    async def scenario() -> tuple[list[object], str]:
        calls = 0

        async def model(items: list[int]) -> list[str]:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise ConnectionError("redis down")
            return [str(item) for item in items]

        batcher = FreeModelBatcher(model, max_batch_size=8, wait_s=0.0)
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        return failed, await batcher.submit(3)

    failed, later = asyncio.run(scenario())
    assert [type(error) for error in failed] == [ConnectionError, ConnectionError]
    assert later == "3"


def test_a_caller_that_gave_up_is_left_out_of_the_batch() -> None:
    async def scenario() -> list[list[int]]:
        model = _Model()
        batcher = FreeModelBatcher(model, max_batch_size=8, wait_s=0.0)
        running = asyncio.create_task(batcher.submit(0))
        await _settle()
        abandoned = asyncio.create_task(batcher.submit(1))
        kept = asyncio.create_task(batcher.submit(2))
        await _settle()
        abandoned.cancel()
        model.release.set()
        await _settle()
        model.release.set()
        await asyncio.gather(running, kept)
        return model.batches

    assert asyncio.run(scenario()) == [[0], [2]]


@pytest.mark.parametrize(("size", "wait"), [(0, 0.05), (8, -0.1)])
def test_limits_are_checked(size: int, wait: float) -> None:
    async def model(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="max_batch_size >= 1 and wait_s >= 0"):
        FreeModelBatcher(model, max_batch_size=size, wait_s=wait)
