"""The image side of the backbone: tapped block outputs and the value-value ("surgery") path.

All methods read intermediate tokens of the CLIP ViT. Two details decide whether they are right:

* Taps are *copies*. AnomalyCLIP (issues #18/#64) and CLIP-AD stored tensors that a later in-place ``+=``
  changed, so every "layer" feature was silently the last one. Here blocks are run functionally and every
  tap is cloned, so no later update, ours or a caller's, can reach an earlier tap. CLIP-AD's released SDP+
  layers were trained on its overwritten taps, so ``overwritten_taps=True`` reproduces them on purpose:
  tap l then holds ``X_l + Attn_{l+1}(X_l)``, what the official in-place update leaves behind.
* The V-V path (docs/methods.md) is computed from the *original* path's LayerNorm output in the same block,
  sharing one QKV projection with it, and skips the FFN. Its variants (start block, residual or zero start,
  staged reset, CLS taken from the original path) are configuration, not copies of the code.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn


@dataclass(frozen=True)
class SurgeryConfig:
    """Configuration of the value-value attention path that runs beside CLIP's own.

    Attributes:
        start_block: first block (1-indexed) that computes the V-V path; earlier blocks run CLIP only.
        init: ``residual``: the path starts as the block input plus the V-V output (AnoVL, AnomalyCLIP DPAM);
            ``zero``: it starts as the V-V output alone (CLIP-AD).
        reset_every: None, or k: every k blocks after ``start_block`` the path restarts from the V-V output
            alone, so tap k*j holds only the sum of its own stage (CLIP-AD's staged dual path, k = L/4).
        cls_from_original: replace the path's CLS row by the original path's CLS at the same layer, as every
            method using the path does before projecting.
    """

    start_block: int = 1
    init: Literal["residual", "zero"] = "residual"
    reset_every: int | None = None
    cls_from_original: bool = True

    def starts_stage(self, block: int) -> bool:
        """True when ``block`` (1-indexed) begins a new accumulation of the V-V path."""
        if block == self.start_block:
            return True
        after_start = block - self.start_block
        return bool(self.reset_every) and after_start > 0 and after_start % self.reset_every == 0


@dataclass
class VisionFeatures:
    """What one image forward returns. Token tensors include the CLS row at index 0.

    Attributes:
        raw: tap -> ``(B, 1+N, W)`` residual stream after that block (1-indexed), before ``ln_post``.
        projected: tap -> ``(B, 1+N, D)``, ``ln_post`` then ``proj`` applied to every token.
        vv_raw: tap -> ``(B, 1+N, W)`` V-V path after that block (only taps at or after ``start_block``).
        vv_projected: tap -> ``(B, 1+N, D)`` of the V-V path.
        global_embedding: ``(B, D)`` CLIP's image embedding (original path, equal to ``encode_image``), or
            None when the forward stopped early.
        global_embedding_no_ln: ``(B, D)`` the final CLS token times ``proj`` *without* ``ln_post``, the
            global embedding of ViP²-CLIP's official image encoder; None when the forward stopped early.
        grid: ``(rows, cols)`` of the patch grid; N = rows * cols.
    """

    raw: dict[int, torch.Tensor] = field(default_factory=dict)
    projected: dict[int, torch.Tensor] = field(default_factory=dict)
    vv_raw: dict[int, torch.Tensor] = field(default_factory=dict)
    vv_projected: dict[int, torch.Tensor] = field(default_factory=dict)
    global_embedding: torch.Tensor | None = None
    global_embedding_no_ln: torch.Tensor | None = None
    grid: tuple[int, int] = (0, 0)


def check_supported(visual: nn.Module) -> None:
    """Refuse vision towers whose layout the tap and surgery code does not model (ResNets, attention pooling)."""
    if not isinstance(visual, VisionTransformer):
        raise TypeError(f"only ViT image towers are supported, got {type(visual).__name__}")
    if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
        raise TypeError("only ViTs pooled by the CLS token after ln_post (CLIP's own layout) are supported")


def project(visual: VisionTransformer, tokens: torch.Tensor) -> torch.Tensor:
    """``ln_post`` then ``proj``: the joint-space embedding of every token, ``(B, L, W) -> (B, L, D)``."""
    return visual.ln_post(tokens) @ visual.proj


def plain_block(block: ResidualAttentionBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run one block and also return its state after the attention residual, before the MLP.

    Returns:
        ``x + Attn(x)`` and the block output, both ``(B, L, W)``; the first is what an in-place
        ``x += Attn(x)`` leaves in a tensor that held ``x`` (see :func:`encode_image`'s ``overwritten_taps``).
    """
    middle = x + block.ls_1(block.attention(q_x=block.ln_1(x)))
    return middle, middle + block.ls_2(block.mlp(block.ln_2(middle)))


def dual_block(block: ResidualAttentionBlock, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run one block on the original path and compute its V-V attention output from the same projections.

    Args:
        block: an open_clip ``ResidualAttentionBlock`` (``nn.MultiheadAttention`` inside).
        x: ``(B, L, W)`` original-path input.

    Returns:
        The original path's block output ``(B, L, W)``, the V-V attention output ``(B, L, W)``
        (``softmax(v vᵀ / √d_h) v`` per head, then the block's output projection and layer scale), and the
        original path after the attention residual, before the MLP (``x + Attn(x)``).
    """
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    both = F.scaled_dot_product_attention(torch.cat([q, v]), torch.cat([k, v]), torch.cat([v, v]))
    both = attn.out_proj(both.transpose(1, 2).reshape(2 * batch, length, width))
    out_ori, out_vv = block.ls_1(both[:batch]), block.ls_1(both[batch:])
    middle = x + out_ori
    return middle + block.ls_2(block.mlp(block.ln_2(middle))), out_vv, middle


def encode_image(
    visual: VisionTransformer,
    pixels: torch.Tensor,
    taps: Iterable[int] = (),
    surgery: SurgeryConfig | None = None,
    need_global: bool = True,
    overwritten_taps: bool = False,
) -> VisionFeatures:
    """Forward a batch through the ViT and collect the requested taps.

    Args:
        visual: the open_clip vision tower.
        pixels: ``(B, 3, S, S)`` normalised images.
        taps: block indices, 1-indexed (12 = the last block of ViT-B).
        surgery: run the V-V path as configured, or None for CLIP alone.
        need_global: also return CLIP's image embedding; when False the forward stops after the last tap
            (one block later with ``overwritten_taps``).
        overwritten_taps: reproduce CLIP-AD's official taps: every tap but the last block's holds
            ``X_l + Attn_{l+1}(X_l)`` (its own output plus the next block's attention residual), and so does
            the CLS row that ``cls_from_original`` copies into the V-V tap. The V-V patch rows are unaffected:
            the official path restarts from a fresh tensor right after each quarter tap.

    Returns:
        :class:`VisionFeatures`.
    """
    taps = sorted(set(taps))
    blocks = visual.transformer.resblocks
    if taps and not 1 <= taps[0] <= taps[-1] <= len(blocks):
        raise ValueError(f"taps must lie in 1..{len(blocks)}, got {taps}")
    last = len(blocks) if need_global or not taps else min(taps[-1] + int(overwritten_taps), len(blocks))
    grid = (pixels.shape[-2] // visual.patch_size[0], pixels.shape[-1] // visual.patch_size[1])
    features = VisionFeatures(grid=grid)
    x = visual._embeds(pixels)
    path = None
    for index, block in enumerate(blocks[:last], start=1):
        if surgery is not None and index >= surgery.start_block:
            block_input = x
            x, out_vv, middle = dual_block(block, x)
            if not surgery.starts_stage(index):
                path = path + out_vv
            elif index == surgery.start_block and surgery.init == "residual":
                path = block_input + out_vv
            else:
                path = out_vv
        elif overwritten_taps:
            middle, x = plain_block(block, x)
        else:
            x = block(x)
        if overwritten_taps and index - 1 in features.raw:
            features.raw[index - 1] = middle  # the official in-place ``x += attn`` reaches the stored tap
        if index in taps:
            features.raw[index] = x.clone()
            if path is not None:
                features.vv_raw[index] = path.clone()
    _project_taps(visual, features, surgery)
    if last == len(blocks) and need_global:
        features.global_embedding = project(visual, x[:, 0])
        features.global_embedding_no_ln = x[:, 0] @ visual.proj
    return features


def _project_taps(visual: VisionTransformer, features: VisionFeatures, surgery: SurgeryConfig | None) -> None:
    """Fill ``projected`` and ``vv_projected`` once every raw tap is final (after any overwrite)."""
    for index, raw in features.raw.items():
        features.projected[index] = project(visual, raw)
        if index in features.vv_raw:
            vv = features.vv_raw[index]
            if surgery is not None and surgery.cls_from_original:
                vv = torch.cat([raw[:, :1], vv[:, 1:]], dim=1)
                features.vv_raw[index] = vv
            features.vv_projected[index] = project(visual, vv)


def encode_token_subsets(visual: VisionTransformer, pixels: torch.Tensor, subsets: torch.Tensor) -> torch.Tensor:
    """Embed, for each image, the CLS token plus each subset of patch tokens as if it were a whole image.

    WinCLIP's window embeddings: each window's tokens, with their own position embeddings and the CLS token,
    go through the full transformer on their own. Because ``ln_pre`` acts per token, selecting tokens after
    it is the same as selecting them before.

    Args:
        visual: the open_clip vision tower.
        pixels: ``(B, 3, S, S)``.
        subsets: ``(M, K)`` patch indices (0-based, row-major over the grid).

    Returns:
        ``(B, M, D)`` image embeddings of the M subsets.
    """
    tokens = visual._embeds(pixels)
    batch, width = tokens.shape[0], tokens.shape[-1]
    count, size = subsets.shape
    windows = tokens[:, 1:][:, subsets.reshape(-1)].reshape(batch * count, size, width)
    cls = tokens[:, :1].expand(batch, count, width).reshape(batch * count, 1, width)
    x = visual.transformer(torch.cat([cls, windows], dim=1))
    return project(visual, x[:, 0]).reshape(batch, count, -1)
