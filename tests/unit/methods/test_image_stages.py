"""The split of every method into a shared image stage and a per-camera head (zsad_core.methods.stages)."""

from __future__ import annotations

import pytest
import torch

from zsad_core.backbone import TINY_ARCH, build_backbone
from zsad_core.few_shot import with_references
from zsad_core.methods import MethodConfig, ZeroShotMethod, get_method_spec, list_methods, load_method
from zsad_core.methods.stages import encode_shared

OPTIONS = {"image_views": "none"}  # AnoCLIP's 22 views are covered by the anoclip-with-views cases below
CASES = [(name, {}) for name in list_methods()] + [("anoclip", {"image_views": "official22"})]


def _load(name, backbone, class_name="bottle", **options):
    fields = get_method_spec(name).config_cls.__dataclass_fields__
    overrides = {key: value for key, value in OPTIONS.items() if key in fields} | options
    return load_method(name, backbone=backbone, class_name=class_name, **overrides)


def _pixels(count, seed):
    return torch.randn(count, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _tower_forwards(backbone):
    """Batch sizes of every vision-tower forward (window and view passes included), recorded by a hook."""
    sizes = []
    hook = backbone.model.visual.conv1.register_forward_hook(lambda _, inputs, __: sizes.append(len(inputs[0])))
    return sizes, hook


@pytest.mark.parametrize("references", [False, True], ids=["zero-shot", "references"])
@pytest.mark.parametrize(("name", "options"), CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_head_on_rows_of_a_shared_stage_equals_predict_alone(name, options, references, tiny_backbone):
    """The method's rows of a stage run over a batch mixed with another class's frames give its own predict."""
    method = _load(name, tiny_backbone, **options)
    other = _load(name, tiny_backbone, class_name="cable", **options)
    if references:
        method = with_references(method, _pixels(2, 7))
    mine, theirs = _pixels(2, 1), _pixels(3, 2)
    alone = method.predict(mine)

    shared = encode_shared([(other, theirs), (method, mine)])

    # each stage ran once; those of the other class over both batches (WinCLIP's memory taps are its own stage)
    assert shared.forward_sizes == {stage: 5 if stage in other.image_stages() else 2 for stage in method.image_stages()}
    result = method.predict_head(shared.outputs[1])
    torch.testing.assert_close(result.maps, alone.maps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(result.scores, alone.scores, rtol=1e-5, atol=1e-5)


def test_classes_and_methods_on_one_vision_path_share_one_tower_forward(tiny_backbone):
    """clip-ad on two products, clip-ad+ and a reference set: one stage, one forward of all their frames."""
    bottle = _load("clip-ad", tiny_backbone)
    cable = _load("clip-ad", tiny_backbone, class_name="cable")
    plus = _load("clip-ad+", tiny_backbone, class_name="screw")
    referenced = with_references(_load("clip-ad", tiny_backbone, class_name="wood"), _pixels(1, 7))
    assert bottle.image_stages() == cable.image_stages() == plus.image_stages() == referenced.image_stages()
    batches = [(bottle, _pixels(2, 1)), (cable, _pixels(1, 2)), (plus, _pixels(3, 3)), (referenced, _pixels(2, 4))]
    sizes, hook = _tower_forwards(tiny_backbone)
    try:
        shared = encode_shared(batches)
    finally:
        hook.remove()
    assert sizes == [8] and list(shared.forward_sizes.values()) == [8]
    for (method, pixels), outputs in zip(batches, shared.outputs, strict=True):
        torch.testing.assert_close(method.predict_head(outputs).maps, method.predict(pixels).maps, rtol=1e-5,
                                   atol=1e-5)  # fmt: skip


def test_vision_paths_that_differ_are_separate_stages(tiny_backbone):
    clip_ad = _load("clip-ad", tiny_backbone)
    assert clip_ad.image_stages() != _load("anoclip", tiny_backbone).image_stages()  # another V-V variant
    assert clip_ad.image_stages() != _load("clip-ad", tiny_backbone, official_tap_overwrite=True).image_stages()
    assert clip_ad.image_stages() != _load("clip-ad", tiny_backbone, taps=(2, 4)).image_stages()
    torch.manual_seed(0)
    twin = build_backbone(TINY_ARCH)  # built alike, but another instance: its weights are not ours to assume
    assert clip_ad.image_stages() != _load("clip-ad", twin).image_stages()
    # Pre-VCP and ICA read the image inside their heads: both stages are CLIP's own path with the same taps
    assert _load("vcp-clip", tiny_backbone).image_stages() == _load("vip2-clip", tiny_backbone).image_stages()
    methods = [clip_ad, *(_load(name, tiny_backbone) for name in ("anoclip", "vcp-clip", "vip2-clip"))]
    batches = list(zip(methods, [_pixels(2, 1), _pixels(2, 2), _pixels(1, 3), _pixels(1, 4)], strict=True))
    sizes, hook = _tower_forwards(tiny_backbone)
    try:
        shared = encode_shared(batches)
    finally:
        hook.remove()
    assert sorted(sizes) == [2, 2, 2] and sorted(shared.forward_sizes.values()) == [2, 2, 2]


class _ForwardOnly(ZeroShotMethod):
    """A method written before the split: it overrides ``forward`` alone."""

    def forward(self, pixels):
        maps = pixels.abs().mean(dim=1)
        return maps, maps.flatten(1).amax(dim=1)


def test_a_method_that_overrides_only_forward_is_its_own_stage(tiny_backbone):
    method = _ForwardOnly(tiny_backbone, MethodConfig()).setup()
    pixels = _pixels(2, 1)
    shared = encode_shared([(method, pixels), (_load("clip-ad", tiny_backbone), _pixels(1, 2))])
    result = method.predict_head(shared.outputs[0])
    torch.testing.assert_close(result.maps, pixels.abs().mean(dim=1))
    torch.testing.assert_close(result.scores, method.predict(pixels).scores)
    assert len(shared.forward_sizes) == 2
