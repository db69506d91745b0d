"""ViP-FGP: text vectors refined by attending over an image's patch tokens (METHODS.md section 3.1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FineGrainedPerception(nn.Module):
    """Multi-head cross-attention from the two state vectors to the patch tokens of one tap.

    The result *replaces* the text vectors (there is no residual), so every tap gets its own text vectors
    from one shared module. The official projections are 1x1 ``Conv1d``s with PyTorch's default
    initialisation, which is exactly what ``nn.Linear`` uses, so Linear layers here are the same map and the
    same initial distribution (a Conv1d weight ``(D, D, 1)`` loads as ``(D, D)``).

    Attributes:
        heads: number of attention heads; must divide D.
        query, key, value, out: ``D -> D`` projections with bias.
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"fgp_heads={heads} must divide the embedding dimension {dim}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Refined text vectors.

        Leading dimensions are free, so several taps can go through in one call (e.g. ``(L, B, ...)``).

        Args:
            text: ``(..., T, D)`` L2-normalised text vectors (T = 2: normal, abnormal).
            patches: ``(..., N, D)`` L2-normalised patch tokens of the same images, CLS excluded.

        Returns:
            ``(..., T, D)`` L2-normalised replacements of ``text``.
        """
        q = self._split(self.query(text))  # (..., h, T, d)
        k = self._split(self.key(patches))  # (..., h, N, d)
        v = self._split(self.value(patches))  # (..., h, N, d)
        # No 1/sqrt(d) scaling: the official module multiplies the logits by 1 and its weights were trained so.
        attention = (q @ k.transpose(-1, -2)).softmax(dim=-1)  # (..., h, T, N), a distribution over patches
        gathered = (attention @ v).transpose(-3, -2).flatten(-2)  # (..., T, D)
        return F.normalize(self.out(gathered), dim=-1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., L, D)`` -> ``(..., heads, L, D / heads)``."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)
