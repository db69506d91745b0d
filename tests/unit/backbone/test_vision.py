"""Image side of the backbone against independent computations on the tiny model."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zsad_core.backbone import SurgeryConfig


def _manual_blocks(visual, pixels):
    """Residual stream after every block, computed with open_clip's own forward_intermediates."""
    out = visual.forward_intermediates(pixels, indices=None, output_fmt="NLC", intermediates_only=True,
                                       output_extra_tokens=True)
    prefixes, patches = out["image_intermediates_prefix"], out["image_intermediates"]
    return [torch.cat([c, p], dim=1) for c, p in zip(prefixes, patches, strict=True)]


def _vv_reference(block, x):
    """softmax(v vᵀ/√d_h) v per head with the block's own weights, written as einsums."""
    attn = block.attn
    b, n, w = x.shape
    h = attn.num_heads
    z = F.layer_norm(x, (w,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    v = z @ attn.in_proj_weight[2 * w :].T + attn.in_proj_bias[2 * w :]
    v = v.reshape(b, n, h, w // h)
    scores = torch.einsum("bihd,bjhd->bhij", v, v) / math.sqrt(w // h)
    out = torch.einsum("bhij,bjhd->bihd", scores.softmax(-1), v).reshape(b, n, w)
    return out @ attn.out_proj.weight.T + attn.out_proj.bias


def test_global_embedding_equals_open_clip_encode_image(tiny_backbone, tiny_pixels):
    with torch.inference_mode():
        features = tiny_backbone.encode_image(tiny_pixels, taps=[2])
        expected = tiny_backbone.model.encode_image(tiny_pixels)
    torch.testing.assert_close(features.global_embedding, expected, atol=1e-5, rtol=1e-5)


def test_taps_equal_open_clip_intermediates_and_projection(tiny_backbone, tiny_pixels):
    visual = tiny_backbone.model.visual
    with torch.inference_mode():
        features = tiny_backbone.encode_image(tiny_pixels, taps=[1, 2, 3, 4])
        reference = _manual_blocks(visual, tiny_pixels)
    for tap in (1, 2, 3, 4):
        torch.testing.assert_close(features.raw[tap], reference[tap - 1], atol=1e-5, rtol=1e-5)
        projected = F.layer_norm(reference[tap - 1], (visual.transformer.width,), visual.ln_post.weight,
                                 visual.ln_post.bias, visual.ln_post.eps) @ visual.proj
        torch.testing.assert_close(features.projected[tap], projected, atol=1e-5, rtol=1e-5)
    assert features.grid == tiny_backbone.grid
    assert features.raw[1].shape == (2, 1 + 16, tiny_backbone.width)


def test_taps_are_independent_copies(tiny_backbone, tiny_pixels):
    with torch.inference_mode():
        features = tiny_backbone.encode_image(tiny_pixels, taps=[1, 2, 3, 4], surgery=SurgeryConfig())
        before = {k: v.clone() for k, v in features.raw.items()}
        vv_before = {k: v.clone() for k, v in features.vv_raw.items()}
        features.raw[3] += 1.0  # a caller's in-place update must not reach any other tap
        features.vv_raw[3] += 1.0
    for tap in (1, 2, 4):
        assert torch.equal(features.raw[tap], before[tap])
        assert torch.equal(features.vv_raw[tap], vv_before[tap])
    assert not torch.equal(features.raw[1], features.raw[2])


def test_stop_early_gives_same_taps_without_global(tiny_backbone, tiny_pixels):
    with torch.inference_mode():
        full = tiny_backbone.encode_image(tiny_pixels, taps=[2])
        early = tiny_backbone.encode_image(tiny_pixels, taps=[2], need_global=False)
    assert early.global_embedding is None
    torch.testing.assert_close(early.raw[2], full.raw[2])


@pytest.mark.parametrize(
    ("surgery", "stages"),
    [
        (SurgeryConfig(start_block=1, init="residual"), "residual"),
        (SurgeryConfig(start_block=2, init="residual"), "residual"),
        (SurgeryConfig(start_block=1, init="zero", reset_every=2), "staged"),
    ],
)
def test_vv_path_matches_einsum_reference(tiny_backbone, tiny_pixels, surgery, stages):
    visual = tiny_backbone.model.visual
    with torch.inference_mode():
        features = tiny_backbone.encode_image(tiny_pixels, taps=[1, 2, 3, 4], surgery=surgery)
        original = _manual_blocks(visual, tiny_pixels)
        x_in = visual._embeds(tiny_pixels)
        inputs = [x_in, *original[:-1]]
        path = None
        for block_number in range(1, 5):
            if block_number < surgery.start_block:
                assert block_number not in features.vv_raw
                continue
            out_vv = _vv_reference(visual.transformer.resblocks[block_number - 1], inputs[block_number - 1])
            if block_number == surgery.start_block:
                path = inputs[block_number - 1] + out_vv if surgery.init == "residual" else out_vv
            elif stages == "staged" and (block_number - surgery.start_block) % surgery.reset_every == 0:
                path = out_vv
            else:
                path = path + out_vv
            expected = torch.cat([original[block_number - 1][:, :1], path[:, 1:]], dim=1)
            torch.testing.assert_close(features.vv_raw[block_number], expected, atol=1e-4, rtol=1e-4)
        # the original path is untouched by the dual computation
        torch.testing.assert_close(features.raw[4], original[3], atol=1e-5, rtol=1e-5)


def test_token_subsets_with_all_patches_equal_global_embedding(tiny_backbone, tiny_pixels):
    patches = tiny_backbone.grid[0] * tiny_backbone.grid[1]
    subsets = torch.arange(patches)[None]
    with torch.inference_mode():
        windows = tiny_backbone.encode_token_subsets(tiny_pixels, subsets)
        expected = tiny_backbone.model.encode_image(tiny_pixels)
    torch.testing.assert_close(windows[:, 0], expected, atol=1e-5, rtol=1e-5)


def test_token_subset_equals_forward_of_masked_sequence(tiny_backbone, tiny_pixels):
    visual = tiny_backbone.model.visual
    subset = torch.tensor([[0, 1, 4, 5], [10, 11, 14, 15]])
    with torch.inference_mode():
        windows = tiny_backbone.encode_token_subsets(tiny_pixels, subset)
        tokens = visual._embeds(tiny_pixels)
        for m in range(2):
            keep = torch.cat([torch.tensor([0]), subset[m] + 1])
            x = visual.transformer(tokens[:, keep])
            expected = visual.ln_post(x[:, 0]) @ visual.proj
            torch.testing.assert_close(windows[:, m], expected, atol=1e-5, rtol=1e-5)


def test_bad_taps_are_refused(tiny_backbone, tiny_pixels):
    with pytest.raises(ValueError, match="taps must lie"):
        tiny_backbone.encode_image(tiny_pixels, taps=[0])
    with pytest.raises(ValueError, match="taps must lie"):
        tiny_backbone.encode_image(tiny_pixels, taps=[5])


def test_bf16_cast_returns_float32_close_to_fp32(tiny_backbone, tiny_pixels):
    from zsad_core.backbone import build_backbone

    torch.manual_seed(0)
    bf16 = build_backbone("zsad-tiny-vit", precision="bf16")
    bf16.model.load_state_dict({k: v.to(torch.bfloat16) for k, v in tiny_backbone.model.state_dict().items()})
    with torch.inference_mode():
        low = bf16.encode_image(tiny_pixels, taps=[4]).global_embedding
        ref = tiny_backbone.encode_image(tiny_pixels, taps=[4]).global_embedding
    assert low.dtype == torch.float32
    assert F.cosine_similarity(low, ref).min() > 0.98
