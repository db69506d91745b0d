"""The two official behaviours the backbone reproduces on request, against hand-written references.

* ViP²-CLIP's global embedding: final CLS times ``proj`` without ``ln_post``.
* CLIP-AD's overwritten taps: the official stores each tap without copying and the next block adds its
  attention residual in place; the reference below runs the blocks with that very aliasing.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zsad_core.backbone import TINY_ARCH, SurgeryConfig, build_backbone


@pytest.fixture(scope="module")
def backbone():
    """A tiny backbone whose ``ln_post`` is far from the identity, so skipping it changes the numbers."""
    torch.manual_seed(5)
    model = build_backbone(TINY_ARCH)
    ln_post = model.model.visual.ln_post
    with torch.no_grad():
        ln_post.weight.copy_(torch.rand_like(ln_post.weight) * 2.0 + 0.5)
        ln_post.bias.copy_(torch.randn_like(ln_post.bias))
    return model


@pytest.fixture
def pixels(backbone):
    generator = torch.Generator().manual_seed(2)
    return torch.randn(2, 3, backbone.image_size, backbone.image_size, generator=generator)


def _attention(block, x):
    """The block's attention residual ``ls_1(MHA(ln_1(x)))``, written out with einsums."""
    attn = block.attn
    batch, length, width = x.shape
    heads = attn.num_heads
    z = F.layer_norm(x, (width,), block.ln_1.weight, block.ln_1.bias, block.ln_1.eps)
    q, k, v = (z @ attn.in_proj_weight.T + attn.in_proj_bias).reshape(batch, length, 3, heads, -1).unbind(2)
    weights = (torch.einsum("bihd,bjhd->bhij", q, k) / math.sqrt(width // heads)).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", weights, v).reshape(batch, length, width)
    return block.ls_1(out @ attn.out_proj.weight.T + attn.out_proj.bias)


def _official_aliased_taps(visual, pixels, taps):
    """Blocks run as the official CLIP-AD does: ``x += attn`` in place on the tensor stored as the last tap."""
    stored = {}
    x = visual._embeds(pixels)
    for index, block in enumerate(visual.transformer.resblocks, start=1):
        x += _attention(block, x)  # reaches stored[index - 1] when that tap is this very tensor
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
        if index in taps:
            stored[index] = x
    return stored


def test_global_embedding_without_ln_post_is_final_cls_times_proj(backbone, pixels):
    visual = backbone.model.visual
    with torch.no_grad():
        features = backbone.encode_image(pixels, taps=[2])
        final = visual.forward_intermediates(pixels, indices=None, output_fmt="NLC", intermediates_only=True,
                                             output_extra_tokens=True)["image_intermediates_prefix"][-1][:, 0]
    torch.testing.assert_close(features.global_embedding_no_ln, final @ visual.proj, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(features.global_embedding, backbone.model.encode_image(pixels), atol=1e-5,
                               rtol=1e-5)
    assert not torch.allclose(features.global_embedding_no_ln, features.global_embedding, atol=1e-2)


def test_vip2_conditions_its_prompts_on_the_official_embedding_by_default(backbone, pixels):
    from zsad_core import load_method

    visual = backbone.model.visual
    with torch.no_grad():
        final = visual.forward_intermediates(pixels, indices=None, output_fmt="NLC", intermediates_only=True,
                                             output_extra_tokens=True)["image_intermediates_prefix"][-1][:, 0]
    expected = {False: F.normalize(final @ visual.proj, dim=-1),
                True: F.normalize(backbone.model.encode_image(pixels), dim=-1)}
    for ln_post, reference in expected.items():
        method = load_method("vip2-clip", backbone=backbone, fgp_heads=4, global_ln_post=ln_post)
        seen = []
        method.prompts.register_forward_hook(lambda module, args, output, seen=seen: seen.append(args[0]))
        method.predict(pixels)
        torch.testing.assert_close(seen[0], reference, atol=1e-5, rtol=1e-5)


def test_overwritten_taps_equal_the_official_aliasing(backbone, pixels):
    visual = backbone.model.visual
    taps = (1, 2, 3, 4)
    surgery = SurgeryConfig(init="zero", reset_every=1, cls_from_original=True)
    with torch.no_grad():
        reference = _official_aliased_taps(visual, pixels.clone(), taps)
        clean = backbone.encode_image(pixels, taps, surgery=surgery, need_global=False)
        quirk = backbone.encode_image(pixels, taps, surgery=surgery, need_global=False, overwritten_taps=True)
    for tap in taps:
        torch.testing.assert_close(quirk.raw[tap], reference[tap], atol=1e-5, rtol=1e-5)
        # The V-V path keeps its own patch rows; only its CLS, copied from the original path, changes.
        torch.testing.assert_close(quirk.vv_raw[tap][:, 1:], clean.vv_raw[tap][:, 1:])
        torch.testing.assert_close(quirk.vv_raw[tap][:, :1], reference[tap][:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quirk.raw[4], clean.raw[4])  # the last block has no successor
    for tap in (1, 2, 3):
        assert not torch.allclose(quirk.raw[tap], clean.raw[tap], atol=1e-3)


def test_overwritten_last_tap_runs_one_more_block(backbone, pixels):
    """Taps 1..3 only: the official forward runs every block, so tap 3 is overwritten by block 4 too."""
    with torch.no_grad():
        reference = _official_aliased_taps(backbone.model.visual, pixels.clone(), (1, 2, 3))
        quirk = backbone.encode_image(pixels, (1, 2, 3), need_global=False, overwritten_taps=True)
    torch.testing.assert_close(quirk.raw[3], reference[3], atol=1e-5, rtol=1e-5)


def test_clip_ad_plus_flag_feeds_its_linear_layers_the_overwritten_taps(backbone, pixels):
    from zsad_core import load_method

    with torch.no_grad():
        reference = _official_aliased_taps(backbone.model.visual, pixels.clone(), (1, 2, 3, 4))
    quirk = load_method("clip-ad+", backbone=backbone, rep_vec="mean", official_tap_overwrite=True)
    clean = load_method("clip-ad+", backbone=backbone, rep_vec="mean")
    clean.load_state_dict(quirk.state_dict())
    seen = []
    for layer in quirk.linear_layers:
        layer.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    quirk_maps = quirk.predict(pixels).maps
    for tap, tokens in zip(quirk.taps, seen, strict=True):
        torch.testing.assert_close(tokens, reference[tap][:, 1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(quirk_maps, clean.predict(pixels).maps, atol=1e-4)
