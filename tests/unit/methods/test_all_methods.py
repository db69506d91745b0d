"""Registry-wide contract tests: every registered method on the tiny backbone, one interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zsad_core
from zsad_core.artifacts import load_prompts, save_prompts
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.method_names import BUILTIN_METHODS
from zsad_core.methods import get_method_spec, list_methods, load_method

EXPECTED = {"winclip", "clip-ad", "clip-ad+", "anoclip", "anoclip+", "vcp-clip", "vip2-clip"}
REGISTERED = list_methods()  # the contract holds for every method, third-party ones included
FAST = {"image_views": "none"}  # AnoCLIP's 22-view image score is tested in its own file


def _load(name, backbone):
    fields = get_method_spec(name).config_cls.__dataclass_fields__
    overrides = {key: value for key, value in FAST.items() if key in fields}
    return load_method(name, backbone=backbone, class_name="bottle", **overrides).eval()


def test_every_published_method_is_registered():
    assert set(list_methods()) >= EXPECTED


def test_unknown_method_and_option_fail_with_the_valid_names():
    with pytest.raises(KeyError, match="winclip"):
        load_method("patchcore")
    with pytest.raises(TypeError, match="options"):
        zsad_core.methods.get_method_config("winclip", no_such_option=1)


@pytest.mark.parametrize("name", REGISTERED)
def test_contract_shapes_ranges_and_batch_invariance(name, tiny_backbone):
    method = _load(name, tiny_backbone)
    generator = torch.Generator().manual_seed(3)
    pixels = torch.randn(3, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator)
    batch = method.predict(pixels)
    size = tiny_backbone.image_size
    assert batch.maps.shape == (3, size, size) and batch.maps.dtype == torch.float32
    assert batch.scores.shape == (3,)
    assert torch.isfinite(batch.maps).all() and torch.isfinite(batch.scores).all()
    singles = [method.predict(pixels[i : i + 1]) for i in range(3)]
    torch.testing.assert_close(batch.maps, torch.cat([s.maps for s in singles]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.scores, torch.cat([s.scores for s in singles]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", REGISTERED)
def test_predict_accepts_raw_images(name, tiny_backbone):
    method = _load(name, tiny_backbone)
    images = [np.random.default_rng(i).integers(0, 256, (50, 70, 3), dtype=np.uint8) for i in range(2)]
    result = method.predict(images)
    assert result.maps.shape == (2, tiny_backbone.image_size, tiny_backbone.image_size)


def test_methods_share_one_backbone_without_owning_it(tiny_backbone):
    methods = [_load(name, tiny_backbone) for name in REGISTERED]
    assert all(m.backbone is tiny_backbone for m in methods)
    backbone_params = {id(p) for p in tiny_backbone.parameters()}
    for method in methods:
        assert not backbone_params & {id(p) for p in method.parameters()}
        assert not any(key.startswith("_backbone") or key.startswith("model.") for key in method.state_dict())


@pytest.mark.parametrize("name", [name for name in REGISTERED if get_method_spec(name).method_cls.learnable])
def test_learnable_artifacts_round_trip_and_refuse_mismatches(name, tiny_backbone, tmp_path):
    method = _load(name, tiny_backbone)
    with torch.no_grad():
        for parameter in method.trainable_parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    artifact = save_prompts(method, tmp_path / "v1")
    fresh = _load(name, tiny_backbone)
    load_prompts(fresh, artifact)
    for key, value in method.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key]), key
    pixels = torch.randn(1, 3, tiny_backbone.image_size, tiny_backbone.image_size)
    torch.testing.assert_close(fresh.predict(pixels).maps, method.predict(pixels).maps, atol=0, rtol=0)
    with pytest.raises(FileExistsError):
        save_prompts(method, artifact)
    weights = artifact / "prompts.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(IncompatibleWeightsError, match="sha256"):
        load_prompts(fresh, artifact)


def test_manifest_of_another_backbone_or_taps_is_refused(tiny_backbone, tmp_path):
    from zsad_core.backbone import build_backbone

    method = _load("vip2-clip", tiny_backbone)
    artifact = save_prompts(method, tmp_path / "a")
    larger = build_backbone("zsad-tiny-vit", image_size=96)
    with pytest.raises(IncompatibleWeightsError, match="backbone"):
        load_prompts(_load("vip2-clip", larger), artifact)
    other_taps = load_method("vip2-clip", backbone=tiny_backbone, taps=(2, 4))
    with pytest.raises(IncompatibleWeightsError, match="taps"):
        load_prompts(other_taps, artifact)
    with pytest.raises(IncompatibleWeightsError, match="method"):
        load_prompts(_load("vcp-clip", tiny_backbone), artifact)


def test_the_torch_free_name_table_matches_the_registry():
    assert set(BUILTIN_METHODS) == EXPECTED
    for name, builtin in BUILTIN_METHODS.items():
        method_cls = get_method_spec(name).method_cls
        assert method_cls.learnable == builtin.learnable, name
        assert method_cls.__module__.startswith(f"zsad_core.methods.{builtin.module}"), name
