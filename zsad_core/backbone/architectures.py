"""Backbone names and the project's own open_clip model configs.

A backbone is named ``arch`` or ``arch:tag`` (``ViT-B-16-plus-240:laion400m_e31``), following open_clip's
architecture names and pretrained tags. The project ships small configs of its own (``zsad-tiny-vit``: a
4-block ViT with width 96) so that tests and benchmarks build a real open_clip model in milliseconds; they are
registered with open_clip's config registry the first time this module is imported, exactly as a user would
add a folder of configs with ``open_clip.add_model_config``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import open_clip

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
TINY_ARCH = "zsad-tiny-vit"

open_clip.add_model_config(MODEL_CONFIG_DIR)


@dataclass(frozen=True)
class BackboneName:
    """A parsed ``arch[:tag]`` name.

    Attributes:
        arch: open_clip architecture (``ViT-L-14-336``).
        tag: pretrained tag (``openai``, ``laion400m_e31``) or None for random weights / an explicit file.
    """

    arch: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.arch}:{self.tag}" if self.tag else self.arch


def parse_backbone_name(name: str) -> BackboneName:
    """Split ``arch[:tag]`` and check that open_clip knows the architecture.

    Raises:
        ValueError: for an unknown architecture, listing a few valid names.
    """
    arch, _, tag = name.partition(":")
    if arch not in open_clip.list_models():
        vits = [m for m in open_clip.list_models() if m.startswith("ViT-")][:8]
        raise ValueError(f"unknown CLIP architecture {arch!r}; examples: {TINY_ARCH}, {', '.join(vits)}")
    return BackboneName(arch=arch, tag=tag or None)
