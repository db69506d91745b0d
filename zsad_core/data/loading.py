"""Protocol samples through a ``torch.utils.data.DataLoader``, so decoding runs ahead of the model.

Why workers: decoding a 1024 x 1024 PNG and squashing it bicubically takes longer than a GPU forward of its
share of a batch, so with ``num_workers > 0`` the next batches are prepared in other processes while the
model runs. Evaluation and training share this one loader.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.utils.data

from zsad_core.data.base import BaseDataset
from zsad_core.data.protocol import ProtocolSample, Resolution, to_protocol


class ProtocolView(torch.utils.data.Dataset):
    """Some samples of a dataset, in the given index order, decoded and brought to the protocol on access."""

    def __init__(self, dataset: BaseDataset, indices: Sequence[int], size: int, resolution: Resolution = "protocol"):
        self.dataset, self.indices, self.size, self.resolution = dataset, list(indices), size, resolution

    def __len__(self) -> int:
        """Number of samples in the view."""
        return len(self.indices)

    def __getitem__(self, position: int) -> ProtocolSample:
        """The protocol sample of the view's ``position``-th index."""
        return to_protocol(self.dataset[int(self.indices[position])], self.size, resolution=self.resolution)


def protocol_loader(dataset: BaseDataset, indices: Sequence[int], size: int, *, batch_size: int,
                    num_workers: int, resolution: Resolution = "protocol") -> torch.utils.data.DataLoader:
    """Batches (lists) of protocol samples in index order, decoded by ``num_workers`` processes (0: inline)."""
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    # Its own generator: a DataLoader draws a worker base seed on every iteration, and drawing it from torch's
    # global RNG would shift the random stream that training (dropout, initialisation) is seeded with.
    return torch.utils.data.DataLoader(ProtocolView(dataset, indices, size, resolution), batch_size=batch_size,
                                       shuffle=False, num_workers=num_workers, collate_fn=list,
                                       prefetch_factor=2 if num_workers else None,
                                       generator=torch.Generator().manual_seed(0))
