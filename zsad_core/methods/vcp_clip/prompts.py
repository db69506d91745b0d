"""Pre-VCP, text side: image-conditioned class tokens, deep text prompts, one batched text-encoder call.

VCP-CLIP (docs/methods.md, VCP-CLIP) writes no product name into its prompts. The class word of
``"a photo of a good <class>"`` / ``"a photo of a damaged <class>"`` is replaced by r tokens computed from the
image's global embedding, and learnable prompts enter the frozen text tower after SOS at every layer. The
prompts therefore differ per image. The official code runs the text encoder once per image; here the B x 2
prompts of a batch go through it in one call.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zsad_core.backbone import ClipBackbone
from zsad_core.backbone.text import eot_index, find_token, splice


class VisualContext(nn.Module):
    """The r class tokens of one image: ``c = Q + Conv1d_{1->r, k=3, same}(g)``.

    Each token is a learned bias vector plus a learned 3-tap filter slid along the global embedding. The
    filter output has length D (joint space) but is used as r token embeddings (text width), so the two
    widths must be equal (768 on ViT-L/14, 512 on ViT-B/16). The official code asserts the same.

    Args:
        embed_dim: D, length of the global embedding.
        text_width: width of the text tower's token embeddings.
        length: r, the number of class tokens (``prompt_len``).
        use_global: False drops the image term and leaves ``c = Q`` (the official ``--use_global`` ablation).
    """

    def __init__(self, embed_dim: int, text_width: int, length: int, use_global: bool = True) -> None:
        super().__init__()
        if embed_dim != text_width:
            raise ValueError(
                f"VCP-CLIP splices a filtered {embed_dim}-d global embedding into {text_width}-wide text tokens; "
                "it needs a backbone whose joint dimension equals its text width"
            )
        if length < 1:
            raise ValueError(f"prompt_len must be at least 1, got {length}")
        self.use_global = use_global
        # Official: randn, then trunc_normal_ (std 1, cut at +-2).
        self.query = nn.Parameter(nn.init.trunc_normal_(torch.empty(length, text_width), std=1.0, a=-2.0, b=2.0))
        self.conv = nn.Conv1d(1, length, kernel_size=3, padding="same")  # PyTorch default init, as official

    def forward(self, global_embedding: torch.Tensor) -> torch.Tensor:
        """Class tokens ``(B, r, W)`` of ``(B, D)`` global embeddings (not normalised, as official)."""
        tokens = self.query.expand(global_embedding.shape[0], -1, -1)
        if self.use_global:
            tokens = tokens + self.conv(global_embedding[:, None])  # (B, 1, D) -> (B, r, D)
        return tokens


class DeepTextPrompts(nn.Module):
    """Learnable text prompts: n tokens after SOS at layer 0 and at each of the following ``layers`` layers.

    All of them go through one shared projection and dropout before use. ``norm`` is applied to the pooled
    end-of-text row before CLIP's ``ln_final`` (official ``prompt_norm``).

    Args:
        width: text width W.
        length: n, tokens per layer (``deep_prompt_len``).
        layers: layers after the first that get prompts (official ``total_d_layer_len`` = text layers - 1).
        dropout: dropout on the projected prompts (0.1 official); active only in training mode.
    """

    def __init__(self, width: int, length: int, layers: int, dropout: float) -> None:
        super().__init__()
        if length < 1 or layers < 1:
            raise ValueError(f"deep prompts need >= 1 token and >= 1 layer, got {length} tokens, {layers} layers")
        self.shallow = nn.Parameter(torch.empty(length, width).uniform_(-1.0, 1.0))
        self.deep = nn.Parameter(torch.empty(layers, length, width).uniform_(-1.0, 1.0))
        self.proj = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.proj.weight, a=0, mode="fan_out")  # bias keeps PyTorch's default, as official
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.dropout = nn.Dropout(dropout)

    @property
    def length(self) -> int:
        """n, tokens per layer."""
        return self.shallow.shape[0]

    def forward(self, rows: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Projected prompts for ``rows`` sentences.

        The official code encodes each sentence of each image alone, so every sentence gets its own dropout
        mask at every layer; expanding before the dropout keeps that.

        Returns:
            The layer-0 prompt ``(rows, n, W)`` and, per later layer, ``(rows, n, W)``.
        """
        projected = self.proj(torch.cat([self.shallow[None], self.deep]))  # (1 + layers, n, W)
        projected = self.dropout(projected[:, None].expand(-1, rows, -1, -1))
        return projected[0], list(projected[1:].unbind(0))


class PromptLayout(nn.Module):
    """The fixed part of the prompts: template embeddings with r free slots where the placeholder was.

    The templates are spliced once, with zeros in the slots. :meth:`fill` then writes every image's class
    tokens into the slots with one indexed ``where``, so a batch needs no per-image splice.

    Args:
        backbone: the CLIP whose tokenizer and token embeddings are used.
        sentences: one template per state, each containing ``placeholder`` once.
        placeholder: a word that is a single token (e.g. ``X``); its row is replaced.
        length: r, the number of class tokens.
    """

    def __init__(self, backbone: ClipBackbone, sentences: Sequence[str], placeholder: str, length: int) -> None:
        super().__init__()
        ids = backbone.token_ids(placeholder)
        if len(ids) != 1:
            raise ValueError(f"placeholder {placeholder!r} must be one token, it is {len(ids)}")
        tokens = backbone.tokenize(sentences)
        position = find_token(tokens, ids[0])
        with torch.no_grad():
            embeddings = backbone.token_embeddings(tokens)  # (C, L, W)
        free = embeddings.new_zeros(length, embeddings.shape[-1])
        # The sequence keeps its length: rows after the placeholder shift by r - 1 and the EOT with them.
        embeddings, eot = splice(embeddings, eot_index(tokens), position, free, replace=1)
        offset = torch.arange(embeddings.shape[1], device=position.device) - position[:, None]  # (C, L)
        self.register_buffer("embeddings", embeddings, persistent=False)
        self.register_buffer("eot", eot, persistent=False)
        self.register_buffer("slots", (offset >= 0) & (offset < length), persistent=False)
        self.register_buffer("slot_index", offset.clamp(0, length - 1), persistent=False)

    def fill(self, context: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, C, L, W)`` with each image's ``(B, r, W)`` class tokens in the slots."""
        placed = context[:, self.slot_index]  # (B, C, L, W): slot j of every sentence holds c_j
        return torch.where(self.slots[..., None], placed, self.embeddings)


def encode_prompts(
    backbone: ClipBackbone, layout: PromptLayout, prompts: DeepTextPrompts, context: torch.Tensor
) -> torch.Tensor:
    """L2-normalised text embeddings ``(B, C, D)`` of every image's C sentences, in one text-encoder call.

    The official encoder adds CLIP's position embeddings *before* it inserts the layer-0 prompt after SOS
    (and drops the last n rows to keep the length): the prompt row carries no position embedding and every
    later row keeps the one of its position before the insertion. The released weights were trained that
    way. :meth:`ClipBackbone.encode_embeddings` adds the position embeddings itself, so the edited sequence
    is passed with them subtracted again; the sum it forms is the official one, up to float rounding.

    Args:
        backbone: the frozen CLIP.
        layout: the templates with their class-token slots.
        prompts: the deep text prompts (and ``prompt_norm``).
        context: ``(B, r, W)`` class tokens of each image.

    Returns:
        ``(B, C, D)`` text embeddings; row order is image-major (image b, sentence c).
    """
    batch, count = context.shape[0], layout.eot.shape[0]
    tokens = layout.fill(context).flatten(0, 1)  # (B*C, L, W)
    shallow, deep = prompts(tokens.shape[0])
    length, n = tokens.shape[1], prompts.length
    positions = backbone.model.positional_embedding.to(tokens.dtype)  # (L, W)
    tokens = tokens + positions
    tokens = torch.cat([tokens[:, :1], shallow, tokens[:, 1 : length - n]], dim=1) - positions
    eot = layout.eot.repeat(batch) + n  # the inserted prompt moves the EOT by n
    embeddings = backbone.encode_embeddings(tokens, eot, deep_prompts=deep, final_norm=prompts.norm)
    return F.normalize(embeddings, dim=-1).view(batch, count, -1)
