"""Official checkpoints (CLIP-AD SDP+, ViP²-CLIP, VCP-CLIP) built here with the official key names and shapes.

Each file is loaded with ``weights="official:FILE"`` and compared with the same method whose tensors were
assigned by hand, module by module; mismatching files must be refused with the differing key named.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from zsad_core import load_method
from zsad_core.artifacts import load_prompts, save_prompts
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.official_weights import detect_layout, flatten


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape) * 0.1


def _official_clip_ad_plus(width: int, dim: int, taps: int) -> dict:
    layers = {}
    for i in range(taps):
        layers[f"fc.{i}.weight"], layers[f"fc.{i}.bias"] = _randn(dim, width), _randn(dim)
    return {"linear_layers": layers}


def _conv_heads(query_dim: int, width: int) -> dict:
    """``Zero_Parameter`` / ``FGP``: four 1x1 Conv1d projections and an (unused or learned) temperature."""
    heads = {"prompt_temp_l1": torch.tensor(2.5)}
    for name, fan_in in (("q_proj_pre", query_dim), ("k_proj_pre_1", width), ("v_proj_pre_1", width),
                         ("proj_post_t", width)):
        heads[f"{name}.weight"], heads[f"{name}.bias"] = _randn(width, fan_in, 1), _randn(width)
    return heads


def _official_vip2(dim: int, n_ctx: int, n_cls: int) -> dict:
    ica = {"cls_ctx": _randn(n_cls, dim), "ctx_pos": _randn(n_ctx, dim), "ctx_neg": _randn(n_ctx, dim),
           "cls_prompter.bias": _randn(1, dim), "token_prefix_pos": torch.zeros(1, 1, dim),
           "tokenized_prompts_pos": torch.zeros(1, 77, dtype=torch.long)}
    hidden = dim // 2
    for i in range(n_cls):
        ica[f"cls_prompter.fc.{i}.0.weight"], ica[f"cls_prompter.fc.{i}.0.bias"] = _randn(hidden, dim), _randn(hidden)
        ica[f"cls_prompter.fc.{i}.2.weight"], ica[f"cls_prompter.fc.{i}.2.bias"] = _randn(dim, hidden), _randn(dim)
    return {"prompt_learner": ica, "Zero_try": _conv_heads(dim, dim)}


def _official_vcp(width: int, dim: int, text_layers: int, taps: int, r: int, n: int) -> dict:
    linear = {}
    for i in range(taps):
        linear[f"fc.{i}.weight"], linear[f"fc.{i}.bias"] = _randn(dim, width), _randn(dim)
    return {
        "trainable_linearlayer": linear,
        "New_Lan_Embed": {"prompt_query": _randn(1, r, dim), "prompt_linear1.fc.weight": _randn(r, 1, 3),
                          "prompt_linear1.fc.bias": _randn(r), "prompt_temp": torch.tensor(2.7)},
        "Zero_try": _conv_heads(dim, width),
        "prompt_embeddings": _randn(1, n, dim),
        "deep_prompt_embeddings": _randn(text_layers - 1, n, dim),
        "prompt_proj.weight": _randn(dim, dim), "prompt_proj.bias": _randn(dim),
        "prompt_norm.weight": 1.0 + _randn(dim), "prompt_norm.bias": _randn(dim),
        "prompt_text_projection": _randn(dim, dim),
    }


def _assign_heads(module, heads: dict) -> None:
    for name, mine in (("q_proj_pre", "query"), ("k_proj_pre_1", "key"), ("v_proj_pre_1", "value"),
                       ("proj_post_t", "out")):
        getattr(module, mine).weight.copy_(heads[f"{name}.weight"][:, :, 0])
        getattr(module, mine).bias.copy_(heads[f"{name}.bias"])


@torch.no_grad()
def _by_hand(name: str, official: dict, backbone, **options):
    """The project's method with the official tensors assigned attribute by attribute."""
    method = load_method(name, backbone=backbone, **options)
    if name == "clip-ad+":
        for i, layer in enumerate(method.linear_layers):
            layer.weight.copy_(official["linear_layers"][f"fc.{i}.weight"])
            layer.bias.copy_(official["linear_layers"][f"fc.{i}.bias"])
    elif name == "vip2-clip":
        ica, prompts = official["prompt_learner"], method.prompts
        prompts.class_tokens.copy_(ica["cls_ctx"])
        prompts.context_normal.copy_(ica["ctx_pos"])
        prompts.context_abnormal.copy_(ica["ctx_neg"])
        prompts.class_prompter.bias.copy_(ica["cls_prompter.bias"])
        for i, mlp in enumerate(prompts.class_prompter.mlps):
            for layer in (0, 2):
                mlp[layer].weight.copy_(ica[f"cls_prompter.fc.{i}.{layer}.weight"])
                mlp[layer].bias.copy_(ica[f"cls_prompter.fc.{i}.{layer}.bias"])
        _assign_heads(method.fgp, official["Zero_try"])
    else:
        context = official["New_Lan_Embed"]
        method.context.query.copy_(context["prompt_query"][0])
        method.context.conv.weight.copy_(context["prompt_linear1.fc.weight"])
        method.context.conv.bias.copy_(context["prompt_linear1.fc.bias"])
        method.tau_pre.copy_(context["prompt_temp"])
        method.tau_post.copy_(official["Zero_try"]["prompt_temp_l1"])
        _assign_heads(method.post, official["Zero_try"])
        for i, head in enumerate(method.pre_heads):
            head.weight.copy_(official["trainable_linearlayer"][f"fc.{i}.weight"])
            head.bias.copy_(official["trainable_linearlayer"][f"fc.{i}.bias"])
        prompts = method.text_prompts
        prompts.shallow.copy_(official["prompt_embeddings"][0])
        prompts.deep.copy_(official["deep_prompt_embeddings"])
        prompts.proj.weight.copy_(official["prompt_proj.weight"])
        prompts.proj.bias.copy_(official["prompt_proj.bias"])
        prompts.norm.weight.copy_(official["prompt_norm.weight"])
        prompts.norm.bias.copy_(official["prompt_norm.bias"])
    return method


def _cases(backbone):
    torch.manual_seed(7)
    width, dim, text_layers = backbone.width, backbone.embed_dim, len(backbone.model.transformer.resblocks)
    return {
        "clip-ad+": (_official_clip_ad_plus(width, dim, 4), {"rep_vec": "mean", "official_tap_overwrite": True}),
        "vip2-clip": (_official_vip2(dim, 5, 2), {"n_ctx": 5, "n_cls": 2, "official_state_word_quirk": True}),
        "vcp-clip": (_official_vcp(width, dim, text_layers, 4, 3, 2), {"prompt_len": 3, "deep_prompt_len": 2}),
    }


@pytest.mark.parametrize("name", ["clip-ad+", "vip2-clip", "vcp-clip"])
def test_official_file_gives_the_maps_of_the_hand_assigned_method(name, tiny_backbone, tiny_pixels, tmp_path):
    official, flags = _cases(tiny_backbone)[name]
    path = tmp_path / "official.pth"
    torch.save(official, path)
    assert detect_layout(flatten(official)) == name
    extra = {"rep_vec": "mean"} if name == "clip-ad+" else {}
    loaded = load_method(name, backbone=tiny_backbone, weights=f"official:{path}", **extra)
    for key, value in flags.items():  # the flags and lengths the weights need were set from the file
        assert getattr(loaded.config, key) == value, key
    expected = _by_hand(name, official, tiny_backbone, **flags).predict(tiny_pixels)
    result = loaded.predict(tiny_pixels)
    assert torch.equal(result.maps, expected.maps) and torch.equal(result.scores, expected.scores)

    # The converted weights become an ordinary artifact that reloads bit-exactly with the same flags.
    artifact = save_prompts(loaded, tmp_path / "artifact", {"converted_from": str(path)})
    again = load_method(name, backbone=tiny_backbone, weights=str(artifact), **flags)
    assert torch.equal(again.predict(tiny_pixels).maps, expected.maps)


def test_safetensors_with_dotted_official_keys_loads(tiny_backbone, tiny_pixels, tmp_path):
    official, flags = _cases(tiny_backbone)["clip-ad+"]
    path = tmp_path / "train_on_visa.safetensors"
    save_file(flatten(official), str(path))
    loaded = load_method("clip-ad+", backbone=tiny_backbone, weights=f"official:{path}", rep_vec="mean")
    expected = _by_hand("clip-ad+", official, tiny_backbone, **flags).predict(tiny_pixels)
    assert torch.equal(loaded.predict(tiny_pixels).maps, expected.maps)


def test_wrong_shape_is_refused_naming_the_official_key(tiny_backbone, tmp_path):
    official, _ = _cases(tiny_backbone)["vcp-clip"]
    official["trainable_linearlayer"]["fc.2.weight"] = _randn(7, tiny_backbone.width)
    torch.save(official, tmp_path / "bad.pth")
    with pytest.raises(IncompatibleWeightsError, match=r"trainable_linearlayer\.fc\.2\.weight has shape \(7, 96\)"):
        load_method("vcp-clip", backbone=tiny_backbone, weights=f"official:{tmp_path / 'bad.pth'}")


def test_missing_unknown_and_extra_tap_keys_are_named(tiny_backbone, tmp_path):
    official, _ = _cases(tiny_backbone)["vip2-clip"]
    del official["Zero_try"]["k_proj_pre_1.bias"]
    official["prompt_learner"]["surprise"] = torch.zeros(3)
    torch.save(official, tmp_path / "bad.pth")
    with pytest.raises(IncompatibleWeightsError, match=r"missing \['Zero_try\.k_proj_pre_1\.bias'\].*"
                                                       r"unexpected \['prompt_learner\.surprise'\]"):
        load_method("vip2-clip", backbone=tiny_backbone, weights=f"official:{tmp_path / 'bad.pth'}")

    five_taps = _official_clip_ad_plus(tiny_backbone.width, tiny_backbone.embed_dim, 5)
    torch.save(five_taps, tmp_path / "five.pth")
    with pytest.raises(IncompatibleWeightsError, match=r"unexpected linear_layers\.fc\.4\.weight"):
        load_method("clip-ad+", backbone=tiny_backbone, weights=f"official:{tmp_path / 'five.pth'}", rep_vec="mean")


def test_other_methods_layouts_contradicting_flags_and_objects_are_refused(tiny_backbone, tmp_path):
    official, _ = _cases(tiny_backbone)["clip-ad+"]
    torch.save(official, tmp_path / "sdp_plus.pth")
    with pytest.raises(IncompatibleWeightsError, match="official clip-ad\\+ weights, not vcp-clip"):
        load_method("vcp-clip", backbone=tiny_backbone, weights=f"official:{tmp_path / 'sdp_plus.pth'}")
    with pytest.raises(IncompatibleWeightsError, match="official_tap_overwrite=False"):
        load_method("clip-ad+", backbone=tiny_backbone, weights=f"official:{tmp_path / 'sdp_plus.pth'}",
                    official_tap_overwrite=False)
    torch.save({"linear_layers": official["linear_layers"], "epoch": "five"}, tmp_path / "objects.pth")
    with pytest.raises(IncompatibleWeightsError, match="'epoch' is a str"):
        load_method("clip-ad+", backbone=tiny_backbone, weights=f"official:{tmp_path / 'objects.pth'}")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "unknown.pth")
    with pytest.raises(IncompatibleWeightsError, match=r"no known official layout has the key groups \['model'\]"):
        load_method("clip-ad+", backbone=tiny_backbone, weights=f"official:{tmp_path / 'unknown.pth'}")


def test_an_artifact_trained_under_other_feature_flags_is_refused_naming_the_flag(tmp_path: Path) -> None:
    trained = load_method("clip-ad+", backbone="zsad-tiny-vit", pretrained=False, image_size=64,
                          official_tap_overwrite=True)  # fmt: skip
    artifact = save_prompts(trained, tmp_path / "a")
    plain = load_method("clip-ad+", backbone="zsad-tiny-vit", pretrained=False, image_size=64)
    with pytest.raises(IncompatibleWeightsError, match="official_tap_overwrite: artifact True != model False"):
        load_prompts(plain, artifact)
    same = load_method("clip-ad+", backbone="zsad-tiny-vit", pretrained=False, image_size=64,
                       official_tap_overwrite=True)  # fmt: skip
    load_prompts(same, artifact)
