"""zsad_core's data-parallel pieces on a real ``torch.distributed`` group: two gloo processes on 127.0.0.1.

Why real processes: the pieces are collectives, and a stub of ``torch.distributed`` would only repeat what the code
assumes. Two ranks on one thread each; every assertion runs inside both ranks, and ``torch.multiprocessing``
re-raises a rank's failure here.
"""

from __future__ import annotations

import datetime as dt
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from zsad_core.data import BaseDataset, DatasetError, Sample, build_dataset
from zsad_core.data_parallel import (
    DatasetShard,
    average_gradients,
    check_in_sync,
    from_rank_zero,
    gather_from_ranks,
    mean_over_ranks,
)

WORLD_SIZE = 2
CPU = torch.device("cpu")


def test_shards_are_equal_strided_and_cover_every_sample() -> None:
    dataset = build_dataset("synthetic:classes=woven+wood,per_class=3,size=16")
    shards = [DatasetShard(dataset, rank, 4) for rank in range(4)]

    assert [shard.positions.tolist() for shard in shards] == [[0, 4], [1, 5], [2, 0], [3, 1]]  # padded by wrapping
    assert shards[2].sample_classes == (dataset.sample_classes[2], dataset.sample_classes[0])
    assert shards[3].labels.tolist() == [dataset.labels[3], dataset.labels[1]]
    assert (shards[1][1].image == dataset[5].image).all()
    with pytest.raises(ValueError, match="rank 2 is not a rank of a group of 2"):
        DatasetShard(dataset, 2, 2)
    with pytest.raises(DatasetError, match="the training data set is empty"):
        DatasetShard(NoSamples(), 0, 1)


class NoSamples(BaseDataset):
    """What no loader builds (they refuse an empty folder), but a shard must not divide by."""

    def __len__(self) -> int:
        return 0

    def _load(self, index: int) -> Sample:
        raise IndexError(index)

    @property
    def labels(self) -> np.ndarray:
        return np.zeros(0, dtype=np.int64)

    @property
    def sample_classes(self) -> tuple[str, ...]:
        return ()


def _rank(rank: int, port: int, expected: list[torch.Tensor]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE,
                            timeout=dt.timedelta(seconds=60))  # fmt: skip
    try:
        _halves_take_the_step_of_the_whole_batch(rank, expected)
        _gradients_missing_on_a_rank(rank)
        _exchanges(rank)
    finally:
        dist.destroy_process_group()


INPUTS = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
TARGETS = INPUTS.sum(dim=1, keepdim=True)


def _model() -> torch.nn.Linear:
    model = torch.nn.Linear(3, 1)
    torch.nn.init.constant_(model.weight, 0.5)
    torch.nn.init.constant_(model.bias, -0.25)
    return model


def _train(model: torch.nn.Linear, optimizer: torch.optim.Optimizer, rows: slice) -> list[torch.Tensor]:
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(INPUTS[rows]), TARGETS[rows]).backward()
        optimizer.step()
    return [p.detach() for p in model.parameters()]


def _halves_take_the_step_of_the_whole_batch(rank: int, expected: list[torch.Tensor]) -> None:
    """Two ranks, each on half of the batch, take the steps one process takes on the whole batch."""
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    average_gradients(optimizer, WORLD_SIZE)
    trained = _train(model, optimizer, slice(4 * rank, 4 * rank + 4))
    for actual, wanted in zip(trained, expected, strict=True):
        torch.testing.assert_close(actual, wanted)
    check_in_sync(trained, CPU)


def _gradients_missing_on_a_rank(rank: int) -> None:
    """A gradient on one rank only counts as zero on the other; one on no rank stays None (the step skips it)."""
    some, none = torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([some, none], lr=1.0)
    average_gradients(optimizer, WORLD_SIZE)
    some.grad = torch.full((4,), 4.0) if rank == 0 else None
    optimizer.step()
    assert some.tolist() == [-2.0] * 4 and none.grad is None and none.tolist() == [0.0, 0.0]
    with pytest.raises(RuntimeError, match="diverged"):
        check_in_sync([some + rank], CPU)


def _exchanges(rank: int) -> None:
    assert mean_over_ranks(float(rank), CPU) == 0.5
    assert from_rank_zero({"latest": rank}, WORLD_SIZE) == {"latest": 0}
    assert gather_from_ranks(f"rng of {rank}", WORLD_SIZE) == ["rng of 0", "rng of 1"]


def test_two_gloo_ranks_average_check_and_exchange() -> None:
    """Forked, not spawned: the ranks start with this process's torch already imported (a spawned rank spends
    seconds importing torch and its optimiser machinery before its first step)."""
    model = _model()
    expected = _train(model, torch.optim.Adam(model.parameters(), lr=0.1), slice(None))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.start_processes(_rank, args=(port, expected), nprocs=WORLD_SIZE, join=True, start_method="fork")


def test_one_rank_needs_no_process_group() -> None:
    assert not dist.is_initialized()
    assert from_rank_zero("state", 1) == "state" and gather_from_ranks("rng", 1) == ["rng"]
