"""Fusion formulas and the FewShotMethod wrapper around real methods on the tiny backbone."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zsad_core import load_method
from zsad_core.backbone import TINY_ARCH, build_backbone
from zsad_core.few_shot import (
    FewShotMethod,
    FusionOptions,
    IncompatibleReferencesError,
    build_memory,
    fuse_maps,
    fuse_scores,
    with_references,
)
from zsad_core.few_shot.memory import memory_tokens, patch_tokens
from zsad_core.methods.ops import gaussian_blur


def test_map_fusions_follow_their_formulas():
    zero_shot, few_shot = torch.tensor([[[0.2, 0.8]]]), torch.tensor([[[0.6, 0.4]]])
    torch.testing.assert_close(fuse_maps(zero_shot, few_shot, "mean", 0.5), torch.tensor([[[0.4, 0.6]]]))
    torch.testing.assert_close(fuse_maps(zero_shot, few_shot, "mean", 0.25), torch.tensor([[[0.3, 0.7]]]))
    # Harmonic mean of 0.2 and 0.6 is 2 / (5 + 5/3) = 0.3; of 0.8 and 0.4 it is 2 / (1.25 + 2.5) = 0.5333...
    torch.testing.assert_close(fuse_maps(zero_shot, few_shot, "harmonic", 0.5), torch.tensor([[[0.3, 8 / 15]]]))
    with pytest.raises(ValueError, match="weight"):
        fuse_maps(zero_shot, few_shot, "mean", 1.5)
    with pytest.raises(ValueError, match="map fusion"):
        fuse_maps(zero_shot, few_shot, "max", 0.5)


def test_score_fusions_use_the_few_shot_peak():
    zero_shot = torch.tensor([0.2, 0.9])
    few_shot_map = torch.tensor([[[0.1, 0.6], [0.3, 0.0]], [[0.5, 0.1], [0.1, 0.1]]])
    torch.testing.assert_close(fuse_scores(zero_shot, few_shot_map, "mean", 0.5), torch.tensor([0.4, 0.7]))
    torch.testing.assert_close(fuse_scores(zero_shot, few_shot_map, "few_shot_max", 0.5), torch.tensor([0.6, 0.5]))


@pytest.mark.parametrize("name", ["clip-ad", "anoclip"])
def test_few_shot_result_is_the_fusion_of_its_parts(name, tiny_backbone, tiny_pixels):
    options = {"image_views": "none"} if name == "anoclip" else {}
    method = load_method(name, backbone=tiny_backbone, class_name="disc", **options)
    references = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    few = with_references(method, references, fusion=FusionOptions(weight=0.25, sigma=1.0))
    assert few.memory.taps == method.taps and few.memory.class_name == "disc"
    result = few.predict(tiny_pixels)
    zero = method.predict(tiny_pixels)
    with torch.inference_mode():
        tokens, grid = patch_tokens(tiny_backbone, tiny_pixels, method.taps, "raw")
        coarse = few.memory.distance_map(tokens, grid)
    few_map = gaussian_blur(F.interpolate(coarse[:, None], size=(64, 64), mode="bilinear", align_corners=True)[:, 0],
                            1.0)
    torch.testing.assert_close(result.maps, 0.75 * zero.maps + 0.25 * few_map)
    torch.testing.assert_close(result.scores, 0.75 * zero.scores + 0.25 * few_map.flatten(1).amax(1))
    assert few.describe()["references"]["shots"] == 2 and few.describe()["method"] == name


def test_weight_zero_gives_the_zero_shot_result_and_setup_reaches_the_method(tiny_backbone, tiny_pixels):
    method = load_method("clip-ad", backbone=tiny_backbone, class_name="disc")
    few = with_references(method, tiny_pixels[:1], fusion=FusionOptions(weight=0.0))
    torch.testing.assert_close(few.predict(tiny_pixels).maps, method.predict(tiny_pixels).maps)
    few.setup("wood")
    assert method.class_name == "wood"
    torch.testing.assert_close(few.predict(tiny_pixels).scores, method.predict(tiny_pixels).scores)


def test_wrapper_refuses_a_memory_of_another_input_size(tiny_backbone, tiny_pixels):
    larger = build_backbone(TINY_ARCH, image_size=96)
    memory = build_memory(larger, torch.randn(1, 3, 96, 96), taps=(4,))
    method = load_method("clip-ad", backbone=tiny_backbone)
    with pytest.raises(IncompatibleReferencesError, match="96"):
        FewShotMethod(method, memory)


@pytest.mark.parametrize(("name", "options"), [
    ("clip-ad", {}), ("anoclip", {"image_views": "none"}), ("vcp-clip", {}), ("vip2-clip", {}),
])  # fmt: skip
def test_references_add_no_forward_of_the_vision_tower(name, options, tiny_backbone, tiny_pixels):
    """The memory's tokens are the ones the wrapped method tapped on the same batch: no second tower forward."""
    method = load_method(name, backbone=tiny_backbone, class_name="disc", **options)
    few = with_references(method, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(7)))
    forwards = []
    hook = tiny_backbone.model.visual.conv1.register_forward_hook(lambda *_: forwards.append(1))
    try:
        method.predict(tiny_pixels)
        alone = len(forwards)
        result = few.predict(tiny_pixels)
    finally:
        hook.remove()
    assert len(forwards) == 2 * alone
    assert few.image_stages() == method.image_stages()
    with torch.inference_mode():  # the shared tokens give what a separate forward would (to float rounding)
        tokens, grid = patch_tokens(tiny_backbone, tiny_pixels, method.taps, "raw")
        separate = few.memory.distance_map(tokens, grid)
        (stage,) = method.image_stages()
        shared = few.memory.distance_map(memory_tokens(stage.run(tiny_pixels), method.taps, "raw"), grid)
    torch.testing.assert_close(shared, separate, rtol=1e-5, atol=1e-6)
    assert result.maps.shape == (2, 64, 64)
