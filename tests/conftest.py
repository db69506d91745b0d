"""Shared fixtures: a tiny random-weight CLIP built once per session (a few hundred ms)."""

from __future__ import annotations

import os

# Nothing in the suite may reach for a model hub: no network exists on CI, and retries would cost minutes.
os.environ.setdefault("ZSAD_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from zsad_core.backbone import TINY_ARCH, ClipBackbone, build_backbone


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test's state home (local stack, relative registry paths) is temporary, never the user's own."""
    os.environ["ZSAD_HOME"] = str(tmp_path_factory.mktemp("zsad-home"))


@pytest.fixture(scope="session")
def tiny_backbone() -> ClipBackbone:
    """A 4-block ViT (width 96, 3 heads, 64 px, 4x4 patches) with a 2-layer text tower, seeded."""
    torch.manual_seed(0)
    return build_backbone(TINY_ARCH)


@pytest.fixture
def tiny_pixels(tiny_backbone: ClipBackbone) -> torch.Tensor:
    """Two random normalised images at the tiny backbone's size."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator)
