"""Training is reproducible from its seed without touching the caller's random state."""

from __future__ import annotations

import torch

from zsad_core.data import SyntheticDataset
from zsad_core.methods import load_method
from zsad_core.training import TrainingOptions, train_method


def _trained(tiny_backbone, caller_seed: int) -> dict[str, torch.Tensor]:
    """vcp-clip trained with seed 5 from the same initial prompts, the caller's RNG at ``caller_seed``."""
    torch.manual_seed(0)  # the prompts' initial values come from the caller's RNG, as in any nn.Module
    method = load_method("vcp-clip", backbone=tiny_backbone)
    dataset = SyntheticDataset(seed=2, classes=1, per_class=4, size=64)
    torch.manual_seed(caller_seed)
    before = torch.get_rng_state()
    train_method(method, dataset, TrainingOptions(epochs=2, batch_size=2, seed=5, max_steps=3))
    assert torch.equal(torch.get_rng_state(), before), "training moved the caller's RNG"
    return {key: value.clone() for key, value in method.state_dict().items()}


def test_training_leaves_the_global_rng_alone_and_repeats_from_its_seed(tiny_backbone) -> None:
    first = _trained(tiny_backbone, caller_seed=1234)
    second = _trained(tiny_backbone, caller_seed=99)  # the run must not depend on the caller's RNG
    untrained = load_method("vcp-clip", backbone=tiny_backbone).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert any(not torch.equal(first[key], untrained[key]) for key in first)  # it did train
