"""Prompt ensembles: sentences built from state words and templates, encoded once and cached.

Methods differ in how they average an ensemble (docs/methods.md): APRIL-GAN/CLIP-AD normalise each sentence
embedding, average, and renormalise; AnoVL and WinCLIP average the raw embeddings. Both are offered here so
each method states its choice in one word.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from zsad_core.backbone import ClipBackbone

Averaging = Literal["normalize_then_mean", "mean_then_normalize"]

# WinCLIP's template-level prompts, reused by CLIP-AD: 11 phrases, each with "a" and "the". Generating the pairs
# makes a duplicated or missing article (anomalib's duplicate "jpeg corrupted" line) impossible.
_TEMPLATE_PHRASES: tuple[str, ...] = (
    "a cropped photo of {art} {{}}.",
    "a close-up photo of {art} {{}}.",
    "a bright photo of {art} {{}}.",
    "a dark photo of {art} {{}}.",
    "a jpeg corrupted photo of {art} {{}}.",
    "a blurry photo of {art} {{}}.",
    "a photo of {art} {{}}.",
    "a photo of {art} large {{}}.",
    "a photo of {art} small {{}}.",
    "a photo of {art} {{}} for visual inspection.",
    "a photo of {art} {{}} for anomaly detection.",
)
WINCLIP_TEMPLATES: tuple[str, ...] = tuple(p.format(art=art) for p in _TEMPLATE_PHRASES for art in ("a", "the"))


def build_sentences(states: Sequence[str], templates: Sequence[str], class_name: str) -> list[str]:
    """Every template filled with every state (each state has ``{}`` for the class name)."""
    return [template.format(state.format(class_name)) for state in states for template in templates]


def encode_sentences(backbone: ClipBackbone, sentences: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """Raw (unnormalised) text embeddings ``(N, D)``, encoded in chunks to bound memory."""
    chunks = [backbone.encode_text(sentences[i : i + batch_size]) for i in range(0, len(sentences), batch_size)]
    return torch.cat(chunks)


def average_ensemble(embeddings: torch.Tensor, averaging: Averaging) -> torch.Tensor:
    """One L2-normalised vector ``(D,)`` from ``(N, D)`` sentence embeddings."""
    if averaging == "normalize_then_mean":
        embeddings = F.normalize(embeddings, dim=-1)
    return F.normalize(embeddings.mean(0), dim=-1)
