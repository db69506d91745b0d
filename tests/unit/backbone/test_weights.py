"""Building by name, loading weights from files without unpickling, resizing position embeddings."""

from __future__ import annotations

import pickle

import pytest
import torch

from zsad_core.backbone import build_backbone, resize_pos_embed
from zsad_core.backbone.architectures import parse_backbone_name
from zsad_core.backbone.weights import fetch_weights, resolve_weight_source
from zsad_core.errors import IncompatibleWeightsError, WeightsUnavailableError


def test_safetensors_round_trip_gives_identical_outputs(tiny_backbone, tiny_pixels, tmp_path):
    path = tmp_path / "tiny.safetensors"
    tiny_backbone.save_weights(path)
    loaded = build_backbone("zsad-tiny-vit", weights=str(path))
    with torch.inference_mode():
        assert torch.equal(loaded.encode_image(tiny_pixels).global_embedding,
                           tiny_backbone.encode_image(tiny_pixels).global_embedding)
        assert torch.equal(loaded.encode_text(["a bottle"]), tiny_backbone.encode_text(["a bottle"]))


def test_torch_file_loads_with_weights_only(tiny_backbone, tiny_pixels, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_backbone.model.state_dict().items()}}, path)
    loaded = build_backbone("zsad-tiny-vit", weights=str(path))
    with torch.inference_mode():
        assert torch.equal(loaded.encode_image(tiny_pixels).global_embedding,
                           tiny_backbone.encode_image(tiny_pixels).global_embedding)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"x": _Payload()}, handle)
    with pytest.raises(WeightsUnavailableError, match="weights_only"):
        build_backbone("zsad-tiny-vit", weights=str(path))


def test_missing_file_and_wrong_architecture_fail_clearly(tiny_backbone, tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_backbone("zsad-tiny-vit", weights=str(tmp_path / "nope.safetensors"))
    path = tmp_path / "tiny.safetensors"
    tiny_backbone.save_weights(path)
    with pytest.raises(IncompatibleWeightsError):
        build_backbone("ViT-B-32:openai", weights=str(path))


def test_unreachable_tag_fails_fast_with_a_hint(monkeypatch):
    monkeypatch.setenv("ZSAD_OFFLINE", "1")
    name = parse_backbone_name("ViT-B-16-plus-240:laion400m_e31")
    source = resolve_weight_source(name, None)
    assert source.kind == "tag"
    with pytest.raises(WeightsUnavailableError, match="safetensors"):
        fetch_weights(source, name.arch)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown CLIP architecture"):
        parse_backbone_name("ViT-Q-99")
    with pytest.raises(WeightsUnavailableError, match="no pretrained tag"):
        resolve_weight_source(parse_backbone_name("ViT-B-16:nonexistent"), None)


def test_tag_brings_its_own_normalisation():
    openai = resolve_weight_source(parse_backbone_name("ViT-L-14-336:openai"), None)
    assert openai.quick_gelu
    assert openai.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_pos_embed_resize_is_identity_at_native_grid():
    pos = torch.randn(1 + 16, 8)
    assert resize_pos_embed(pos, (4, 4)) is pos


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_pos_embed_resize_keeps_constant_fields_and_class_row(mode):
    pos = torch.cat([torch.randn(1, 8), torch.ones(16, 8) * 3.0])
    out = resize_pos_embed(pos, (6, 6), mode)
    assert out.shape == (37, 8)
    assert torch.equal(out[0], pos[0])
    torch.testing.assert_close(out[1:], torch.full((36, 8), 3.0))


def test_loading_at_another_size_interpolates_positions(tiny_backbone, tmp_path):
    path = tmp_path / "tiny.safetensors"
    tiny_backbone.save_weights(path)
    larger = build_backbone("zsad-tiny-vit", weights=str(path), image_size=96)
    assert larger.grid == (6, 6)
    expected = resize_pos_embed(tiny_backbone.model.visual.positional_embedding.detach(), (6, 6))
    torch.testing.assert_close(larger.model.visual.positional_embedding, expected)
    with torch.inference_mode():
        features = larger.encode_image(torch.randn(1, 3, 96, 96), taps=[4])
    assert features.projected[4].shape == (1, 37, 64)


def test_gelu_option_swaps_the_activation():
    backbone = build_backbone("zsad-tiny-vit", activation="gelu")
    acts = {type(m.mlp.gelu).__name__ for m in backbone.model.modules() if hasattr(m, "mlp")}
    assert acts == {"GELU"}
    quick = build_backbone("zsad-tiny-vit", activation="quick_gelu")
    assert {type(m.mlp.gelu).__name__ for m in quick.model.modules() if hasattr(m, "mlp")} == {"QuickGELU"}


def test_backbone_stays_frozen_and_in_eval(tiny_backbone):
    tiny_backbone.train()
    assert not tiny_backbone.training and not tiny_backbone.model.training
    assert not any(p.requires_grad for p in tiny_backbone.parameters())


@pytest.mark.slow
def test_vit_b16_real_architecture_smoke():
    backbone = build_backbone("ViT-B-16")
    pixels = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        features = backbone.encode_image(pixels, taps=[6, 12])
        expected = backbone.model.encode_image(pixels)
    assert features.projected[12].shape == (1, 197, 512)
    assert features.raw[6].shape == (1, 197, 768)
    torch.testing.assert_close(features.global_embedding, expected, atol=1e-4, rtol=1e-4)
