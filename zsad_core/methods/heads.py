"""Heads shared by several methods.

VCP-CLIP's Post-VCP (``Zero_Parameter``) and ViP2-CLIP's FGP are the same module: the two state text vectors
attend over one image's patch tokens and are *replaced* by the result. They differ only in widths (Post-VCP
queries with joint-space text and attends in the raw vision width; FGP stays in the joint space), so one
class with a query width and an attention width serves both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TextQueryAttention(nn.Module):
    """Multi-head cross-attention from text vectors (queries) to patch tokens (keys and values).

    Two details of both official modules are kept on purpose: the logits are **not** scaled by
    ``1/sqrt(d_head)`` (the released weights were trained that way), and the output **replaces** the text
    (no residual) and is L2-normalised. The official projections are 1x1 ``Conv1d``s with PyTorch's default
    initialisation, which is exactly ``nn.Linear``'s; a converted official weight only drops its kernel axis.

    Args:
        query_dim: width of the text vectors.
        width: width of the patch tokens, and of the output.
        heads: attention heads; must divide ``width``.
    """

    def __init__(self, query_dim: int, width: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"heads={heads} must divide the attention width {width}")
        self.heads = heads
        self.query = nn.Linear(query_dim, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Refined text vectors.

        Leading dimensions are free, so several taps can go through in one call (e.g. ``(L, B, ...)``).

        Args:
            text: ``(..., T, query_dim)`` text vectors (T = 2: normal, abnormal).
            patches: ``(..., N, width)`` L2-normalised patch tokens of the same images, CLS excluded.

        Returns:
            ``(..., T, width)`` L2-normalised replacements of ``text``.
        """
        q = self._split(self.query(text))  # (..., h, T, d)
        k = self._split(self.key(patches))  # (..., h, N, d)
        v = self._split(self.value(patches))  # (..., h, N, d)
        attention = (q @ k.transpose(-1, -2)).softmax(dim=-1)  # (..., h, T, N): unscaled, over the patches
        gathered = (attention @ v).transpose(-3, -2).flatten(-2)  # (..., T, width)
        return F.normalize(self.out(gathered), dim=-1)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., L, W)`` -> ``(..., heads, L, W / heads)``."""
        return x.unflatten(-1, (self.heads, -1)).transpose(-3, -2)
