"""Post-VCP: the text embeddings attend to one image's patch tokens (METHODS.md 1.1, ``Zero_Parameter``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PostVcpAttention(nn.Module):
    """Cross-attention with text as query over L2-normalised raw patch tokens.

    For each image, the C text embeddings are queries; keys and values come from its N patch tokens of the
    vision width W. Two details of the official module are kept on purpose:

    * the logits are **not** scaled by ``1/sqrt(d_head)`` (official ``beta_t = 1``);
    * the output **replaces** the text embedding (no residual) and is L2-normalised, so it lives in the
      raw W-d token space, where the Post-VCP map compares it with the patch tokens.

    The official projections are 1x1 ``Conv1d`` layers; ``Linear`` is the same map with the same default
    initialisation (a converted official weight only needs its trailing kernel axis dropped).

    Args:
        text_dim: D, width of the text embeddings (joint space).
        width: W, width of the raw patch tokens.
        heads: attention heads (8 official); must divide W.
    """

    def __init__(self, text_dim: int, width: int, heads: int) -> None:
        super().__init__()
        if heads < 1 or width % heads:
            raise ValueError(f"post_heads={heads} must divide the vision width {width}")
        self.heads = heads
        self.q = nn.Linear(text_dim, width)
        self.k = nn.Linear(width, width)
        self.v = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def forward(self, text: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
        """Refined text embeddings.

        Args:
            text: ``(B, C, D)`` text embeddings, one set per image.
            patches: ``(B, N, W)`` L2-normalised patch tokens of the same images.

        Returns:
            ``(B, C, W)`` L2-normalised refined text embeddings.
        """
        batch, count, _ = text.shape
        tokens, width = patches.shape[1], patches.shape[2]
        q = self.q(text).view(batch, count, self.heads, -1)
        k = self.k(patches).view(batch, tokens, self.heads, -1)
        v = self.v(patches).view(batch, tokens, self.heads, -1)
        attention = torch.einsum("bchd,bnhd->bhcn", q, k).softmax(dim=-1)  # over patches; no 1/sqrt(d)
        mixed = torch.einsum("bhcn,bnhd->bchd", attention, v).reshape(batch, count, width)
        return F.normalize(self.out(mixed), dim=-1)
