"""Frames gathered into model batches when the model is free, not when they arrive.

Why not Serve's ``@serve.batch``: it forms the next batch as soon as that batch's first request arrives and only
then waits for the running batch to finish, so at saturation the frames that arrive while the model runs stay
split in the small groups they arrived in. Measured on one replica with 24 frames waiting: batches of 2 and 3 out
of 8 (``benchmarks/bench_many_cameras.py``, BENCHMARKS.md). Here a batch is taken when the model is free: every
queued frame up to ``max_batch_size``, waiting for more only while fewer are queued and the oldest has waited
less than ``wait_s`` (the rule of Triton's dynamic batcher).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")


@dataclass
class _Waiting(Generic[Item, Answer]):
    item: Item
    arrived: float
    answer: asyncio.Future[Answer]


class FreeModelBatcher(Generic[Item, Answer]):
    """Calls ``process`` on batches of submitted items, one batch at a time, each as full as the queue allows.

    Args:
        process: scores a batch; returns one answer per item, in order. What it raises is raised to every
            caller of that batch.
        max_batch_size: items per call at most.
        wait_s: how long the oldest queued item may wait for the batch to fill when the model is free.

    Raises:
        ValueError: ``max_batch_size`` below 1 or ``wait_s`` negative.
    """

    def __init__(self, process: Callable[[list[Item]], Awaitable[list[Answer]]], max_batch_size: int,
                 wait_s: float) -> None:  # fmt: skip
        if max_batch_size < 1 or wait_s < 0:
            raise ValueError(f"a batcher needs max_batch_size >= 1 and wait_s >= 0, got {max_batch_size}, {wait_s}")
        self._process = process
        self.max_batch_size, self.wait_s = max_batch_size, wait_s
        self._queue: deque[_Waiting[Item, Answer]] = deque()
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: Item) -> Answer:
        """The answer to ``item``, once the batch it joined has been processed."""
        loop = asyncio.get_running_loop()
        if self._runner is None:  # the loop exists only once a request arrives (Serve builds replicas outside it)
            self._runner = loop.create_task(self._run())
        waiting = _Waiting(item, loop.time(), loop.create_future())
        self._queue.append(waiting)
        self._arrived.set()
        return await waiting.answer

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            waiting = [entry for entry in batch if not entry.answer.done()]  # callers that gave up are skipped
            if not waiting:
                continue
            try:
                answers = await self._process([entry.item for entry in waiting])
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it, as Serve's batching does
                for entry in waiting:
                    if not entry.answer.done():
                        entry.answer.set_exception(exc)
                continue
            for entry, answer in zip(waiting, answers, strict=True):
                if not entry.answer.done():
                    entry.answer.set_result(answer)

    async def _next_batch(self) -> list[_Waiting[Item, Answer]]:
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = self._queue[0].arrived + self.wait_s
        batch: list[_Waiting[Item, Answer]] = []
        while len(batch) < self.max_batch_size:
            if self._queue:
                batch.append(self._queue.popleft())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch
