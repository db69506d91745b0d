"""The text side of the backbone: plain prompts, spliced-in learnable tokens and deep prompts.

Learnable-prompt methods change the *input embeddings* of the text transformer rather than the words:
CoOp-style context vectors replace placeholder words (ViP2-CLIP), image-conditioned tokens replace a class
word and lengthen the sequence (VCP-CLIP), and deep prompts overwrite a few positions before each layer.
CLIP pools the sequence at its end-of-text token, so every splice must move that index with it; here the
index is carried explicitly instead of being re-derived with ``argmax`` over token ids, which is what breaks
when the sequence has been edited.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.model import CLIP
from torch import nn


def eot_index(tokens: torch.Tensor) -> torch.Tensor:
    """Position of the end-of-text token: the largest id in CLIP's vocabulary, so ``argmax`` finds it."""
    return tokens.argmax(dim=-1)


def find_token(tokens: torch.Tensor, token_id: int) -> torch.Tensor:
    """First position of ``token_id`` in every row of ``tokens`` ``(N, L)``; raises if a row lacks it."""
    hits = tokens == token_id
    if not bool(hits.any(dim=-1).all()):
        raise ValueError(f"token id {token_id} is missing from at least one prompt")
    return hits.int().argmax(dim=-1)


def splice(
    embeddings: torch.Tensor,
    eot: torch.Tensor,
    position: torch.Tensor | int,
    vectors: torch.Tensor,
    replace: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace ``replace`` rows at ``position`` by ``vectors`` and keep the sequence length.

    Rows after the splice shift by ``r - replace`` (r = number of new vectors); the tail is cut (or padded
    with the last row's values, which are never attended to by the EOT row under the causal mask) to keep
    the context length. The EOT index moves by the same shift.

    Args:
        embeddings: ``(N, L, W)`` token embeddings.
        eot: ``(N,)`` EOT positions.
        position: ``(N,)`` or an int: where the replaced rows start.
        vectors: ``(r, W)`` shared by all rows, or ``(N, r, W)``.
        replace: how many rows are removed at ``position`` (1 replaces a placeholder, 0 inserts).

    Returns:
        The new ``(N, L, W)`` embeddings and ``(N,)`` EOT positions.
    """
    count, length, width = embeddings.shape
    vectors = vectors.to(embeddings.dtype).expand(count, -1, -1) if vectors.dim() == 2 else vectors.to(embeddings.dtype)
    positions = torch.as_tensor(position, device=embeddings.device).expand(count)
    shift = vectors.shape[1] - replace
    rows = []
    for i in range(count):
        start = int(positions[i])
        head, tail = embeddings[i, :start], embeddings[i, start + replace :]
        row = torch.cat([head, vectors[i], tail])
        if row.shape[0] < length:
            row = torch.cat([row, row[-1:].expand(length - row.shape[0], width)])
        rows.append(row[:length])
    new_eot = eot + shift
    if bool((new_eot >= length).any()):
        raise ValueError(f"splicing {vectors.shape[1]} vectors pushes the end-of-text token past {length} tokens")
    return torch.stack(rows), new_eot


def encode_embeddings(
    model: CLIP,
    embeddings: torch.Tensor,
    eot: torch.Tensor,
    deep_prompts: Sequence[torch.Tensor] = (),
    final_norm: nn.Module | None = None,
) -> torch.Tensor:
    """Run the text transformer on input embeddings and pool at the EOT positions.

    Args:
        model: the open_clip CLIP model.
        embeddings: ``(N, L, W)`` token embeddings (positions are added here).
        eot: ``(N,)`` EOT positions.
        deep_prompts: for layers 1..len: ``(n, W)`` or ``(N, n, W)`` vectors that overwrite positions
            ``1..n`` before that layer (0-indexed layer j+1 gets ``deep_prompts[j]``), VPT-deep style.
        final_norm: an extra per-token norm applied before ``ln_final`` (VCP-CLIP's ``prompt_norm``).

    Returns:
        ``(N, D)`` text embeddings, not normalised.
    """
    blocks = model.transformer.resblocks
    if len(deep_prompts) >= len(blocks):
        raise ValueError(f"at most {len(blocks) - 1} deep prompt layers fit a {len(blocks)}-layer text encoder")
    dtype = model.transformer.get_cast_dtype()
    # The text transformer is causal and CLIP pools at the EOT row, so rows after the last EOT never reach the
    # output: cutting them makes short prompt ensembles several times cheaper with identical results.
    length = int(eot.max()) + 1
    x = embeddings[:, :length].to(dtype) + model.positional_embedding[:length].to(dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    for layer, block in enumerate(blocks):
        if 1 <= layer <= len(deep_prompts):
            prompt = deep_prompts[layer - 1].to(dtype)
            prompt = prompt.expand(x.shape[0], -1, -1) if prompt.dim() == 2 else prompt
            x = torch.cat([x[:, :1], prompt, x[:, 1 + prompt.shape[1] :]], dim=1)
        x = block(x, attn_mask=mask)
    pooled = x[torch.arange(x.shape[0], device=x.device), eot]
    if final_norm is not None:
        pooled = final_norm(pooled)
    pooled = model.ln_final(pooled)
    if isinstance(model.text_projection, nn.Linear):
        return model.text_projection(pooled)
    return pooled @ model.text_projection
