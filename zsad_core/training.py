"""The plain-PyTorch training loop of the learnable methods (VCP-CLIP, ViP2-CLIP, CLIP-AD+).

It is deliberately small and stateful in one object, :class:`PromptTrainer`, so that Ray Train can wrap it:
the trainer's ``state_dict`` (method weights, optimiser, epoch, RNG) is what a checkpoint holds, and
``train_epoch`` is what a worker runs between reports. Data comes from any zsad_core dataset, converted with
the papers' protocol (S x S squash, masks resized then > 0.5), with joint image/mask augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from zsad_core.data import BaseDataset
from zsad_core.data.loading import protocol_loader
from zsad_core.methods import ZeroShotMethod
from zsad_core.preprocess import normalize


@dataclass(frozen=True)
class TrainingOptions:
    """Loop settings; None means "the method config's official value".

    Attributes:
        epochs, batch_size, seed: as in the official scripts unless set.
        augment: random flips, 90-degree rotations and brightness/contrast jitter, applied to image and mask
            together (the official VCP-CLIP recipe rotates and jitters; ViP2-CLIP does none).
        max_steps: stop after this many optimiser steps in total (quick runs, tests).
        num_workers: DataLoader processes decoding images ahead of the optimiser (0 decodes inline). The
            augmentation stays in the training process, on the trainer's seeded generator, so a run is
            reproducible and resumable whatever the worker count.
    """

    epochs: int | None = None
    batch_size: int | None = None
    seed: int | None = None
    augment: bool = True
    max_steps: int | None = None
    num_workers: int = 0


def _augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Joint geometric augmentation plus a photometric jitter of the image alone."""
    turns = int(rng.integers(4))
    image, mask = np.rot90(image, turns), np.rot90(mask, turns)
    if rng.random() < 0.5:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < 0.5:
        gain, bias = rng.uniform(0.8, 1.2), rng.uniform(-20, 20)
        image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


class PromptTrainer:
    """Trains one learnable method on one dataset; the backbone stays frozen.

    Args:
        method: a learnable method (``method.learnable``).
        dataset: training data with masks (e.g. the test split of VisA, or ``synthetic``).
        options: loop settings.
    """

    def __init__(self, method: ZeroShotMethod, dataset: BaseDataset, options: TrainingOptions | None = None) -> None:
        if not method.learnable:
            raise ValueError(f"{method.name} has no learnable weights; nothing to train")
        options = options or TrainingOptions()
        config = method.config
        self.method = method
        self.dataset = dataset
        self.options = options
        self.epochs = options.epochs or config.epochs
        self.batch_size = options.batch_size or config.batch_size
        self.seed = config.seed if options.seed is None else options.seed
        # Random ops of the method while it trains (prompt dropout) draw from torch's global RNG. The trainer keeps
        # its own state and swaps it in for each epoch (:meth:`train_epoch`), so a run is reproducible without
        # reseeding the caller's process.
        self._torch_rng = torch.Generator().manual_seed(self.seed).get_state()
        self.optimizer = method.configure_optimizer()
        self.epoch = 0
        self.steps = 0
        self._rng = np.random.default_rng(self.seed)
        self._preprocess = method.backbone.preprocess_config()

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._rng.permutation(len(self.dataset))
        size = self.method.image_size
        loader = protocol_loader(self.dataset, order.tolist(), size, batch_size=self.batch_size,
                                 num_workers=self.options.num_workers)
        for batch in loader:
            images, masks, labels = [], [], []
            for item in batch:
                mask = item.mask if item.mask is not None else np.zeros((size, size), bool)
                image, mask = _augment(item.model_image, mask, self._rng) if self.options.augment else (
                    item.model_image, mask)
                images.append(image)
                masks.append(mask)
                labels.append(item.label)
            device = self.method.backbone.device
            yield {
                "pixels": normalize(np.stack(images), self._preprocess).to(device),
                "masks": torch.from_numpy(np.stack(masks).astype(np.float32)).to(device),
                "labels": torch.tensor(labels, dtype=torch.long, device=device),
            }

    def train_epoch(self, progress: Callable[[int], None] | None = None) -> dict[str, float]:
        """One pass over the data; returns ``{"epoch", "loss", "steps"}`` (mean loss over the epoch's steps).

        ``progress`` is called with the number of images of every step, for a progress bar.
        """
        self.method.train()
        losses = []
        device = torch.device(self.method.backbone.device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.set_rng_state(self._torch_rng)
            if device.type == "cuda":
                torch.cuda.manual_seed(self.seed + self.epoch)  # the GPU's dropout masks, per epoch
            for batch in self._batches():
                if self.options.max_steps is not None and self.steps >= self.options.max_steps:
                    break
                loss = self.method.loss(batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"{self.method.name}: loss became {loss.item()} at step {self.steps}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                losses.append(float(loss.detach()))
                self.steps += 1
                if progress is not None:
                    progress(int(batch["labels"].numel()))
            self._torch_rng = torch.get_rng_state()
        self.method.eval()
        self.epoch += 1
        return {"epoch": self.epoch, "loss": float(np.mean(losses)) if losses else math.nan, "steps": self.steps}

    def fit(self, on_epoch_end: Callable[[dict[str, float]], None] | None = None,
            progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` (resuming from :attr:`epoch`); ``on_epoch_end`` sees each epoch's log and
        ``progress`` the images of every step."""
        history = []
        while self.epoch < self.epochs:
            log = self.train_epoch(progress)
            history.append(log)
            if on_epoch_end is not None:
                on_epoch_end(log)
            if self.options.max_steps is not None and self.steps >= self.options.max_steps:
                break
        return history

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: method weights, optimiser state, counters and the data RNG."""
        return {
            "method": self.method.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epoch": self.epoch,
            "steps": self.steps,
            "rng": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict` output."""
        self.method.load_state_dict(state["method"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch, self.steps = int(state["epoch"]), int(state["steps"])
        self._rng.bit_generator.state = state["rng"]


def train_method(
    method: ZeroShotMethod,
    dataset: BaseDataset,
    options: TrainingOptions | None = None,
    on_epoch_end: Callable[[dict[str, float]], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, float]]:
    """Train ``method`` in place on ``dataset``; returns the per-epoch logs."""
    return PromptTrainer(method, dataset, options).fit(on_epoch_end, progress)

