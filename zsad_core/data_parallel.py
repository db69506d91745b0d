"""Data-parallel prompt training over a ``torch.distributed`` process group, whoever started the ranks.

Why here and not beside the Ray Train job: nothing in it needs Ray, so a unit test runs it on two local gloo
processes. Each rank trains its own :class:`~zsad_core.training.PromptTrainer` on its own :class:`DatasetShard`;
:func:`average_gradients` makes every optimiser step the same on every rank, :func:`check_in_sync` proves that it
did, and :func:`mean_over_ranks`, :func:`from_rank_zero` and :func:`gather_from_ranks` exchange what the ranks
report, resume from and store. Any backend works (gloo on CPU, NCCL on GPUs); with ``world_size`` 1 the exchanges
return at once, so one worker needs no process group. It imports no method code, so a rank starts quickly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from zsad_core.data import BaseDataset, DatasetError, Sample


class DatasetShard(BaseDataset):
    """Rank ``rank``'s strided share of ``dataset``, padded by wrapping around so every rank has the same length.

    Why equal lengths: every optimiser step is a collective (gradient all-reduce), so ranks must take the same
    number of steps per epoch or the longer one waits forever. Padding (as ``DistributedSampler`` does) repeats at
    most ``world_size - 1`` samples instead of dropping any.

    Raises:
        ValueError: ``rank`` is not one of ``0 .. world_size - 1``.
        DatasetError: ``dataset`` is empty.
    """

    def __init__(self, dataset: BaseDataset, rank: int, world_size: int) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not a rank of a group of {world_size}")
        if len(dataset) == 0:
            raise DatasetError("the training data set is empty")
        padded = -(-len(dataset) // world_size) * world_size
        self.dataset = dataset
        self.positions = np.arange(rank, padded, world_size) % len(dataset)

    def __len__(self) -> int:
        """Samples in this shard."""
        return len(self.positions)

    def _load(self, index: int) -> Sample:
        return self.dataset[int(self.positions[index])]

    @property
    def labels(self) -> np.ndarray:
        """Labels of the shard's samples."""
        return self.dataset.labels[self.positions]

    @property
    def sample_classes(self) -> tuple[str, ...]:
        """Class of each of the shard's samples."""
        classes = self.dataset.sample_classes
        return tuple(classes[int(i)] for i in self.positions)


def average_gradients(optimizer: torch.optim.Optimizer, world_size: int) -> None:
    """Average the gradients of every parameter of ``optimizer`` over all ranks before each of its steps.

    Why not DDP: DDP averages gradients only for a backward that follows ``DDP.forward``, but the trainer computes
    ``method.loss(batch)``, not ``method(batch)``; wrapping would need a forward-shaped adapter inside
    :class:`~zsad_core.training.PromptTrainer` and ``find_unused_parameters`` for heads a loss skips. The backbone
    is a plain reference, not a child module, so the module DDP would see holds only the prompt weights anyway. A
    step pre-hook on the optimiser reaches exactly those weights with no change to the trainer: one flat
    all-reduce per step (the prompts are small, so DDP's bucketing and overlap would gain nothing).

    A parameter whose gradient is None on every rank stays None (Adam then skips it, as in one process); one
    that has a gradient on some ranks only counts as zero on the others, as DDP does.
    """

    def hook(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        params = [p for group in opt.param_groups for p in group["params"]]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        present = torch.tensor([p.grad is not None for p in params], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([*(g.reshape(-1) for g in grads), present])
        dist.all_reduce(flat)
        chunks = flat[: -len(params)].split([p.numel() for p in params])
        for param, chunk, count in zip(params, chunks, flat[-len(params):].tolist(), strict=True):
            param.grad = chunk.view_as(param) / world_size if count else None

    optimizer.register_step_pre_hook(hook)


def check_in_sync(parameters: Iterable[torch.Tensor], device: torch.device) -> None:
    """Raise ``RuntimeError`` if the ranks' ``parameters`` differ.

    Why: averaged gradients keep the replicas equal only if they started equal (same seed) and every rank took
    part in every step; a mistake in either silently trains several diverging models, of which rank 0's would be
    saved. The tolerance allows for rounding differences between machines of a multi-node cluster.
    """
    checksum = torch.stack([p.detach().double().sum() for p in parameters]).sum().to(device)
    low, high = checksum.clone(), checksum.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not math.isclose(low.item(), high.item(), rel_tol=1e-6, abs_tol=1e-6):
        raise RuntimeError(f"workers' prompt weights diverged (checksums {low.item()} .. {high.item()})")


def mean_over_ranks(value: float, device: torch.device) -> float:
    """The mean of every rank's ``value`` (an epoch's loss), on every rank."""
    total = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.item() / dist.get_world_size()


def from_rank_zero(value: Any, world_size: int) -> Any:
    """Rank 0's ``value`` on every rank (picklable): every rank resumes from the one checkpoint rank 0 read."""
    if world_size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_from_ranks(value: Any, world_size: int) -> list[Any]:
    """Every rank's ``value`` (picklable), by rank, on every rank (the data RNGs that rank 0 stores)."""
    if world_size == 1:
        return [value]
    values: list[Any] = [None] * world_size
    dist.all_gather_object(values, value)
    return values
