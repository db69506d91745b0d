"""VCP-CLIP on the tiny backbone; its formulas against explicit computations written here."""

from __future__ import annotations

import dataclasses
import json
import shutil
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from zsad_core.artifacts import MANIFEST_FILE, WEIGHTS_FILE, load_prompts, save_prompts
from zsad_core.backbone import build_backbone
from zsad_core.backbone.text import eot_index
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.methods import load_method
from zsad_core.methods.heads import TextQueryAttention
from zsad_core.methods.vcp_clip import VcpClip, VcpClipConfig  # registers "vcp-clip"


@pytest.fixture
def method(tiny_backbone):
    torch.manual_seed(3)
    return load_method("vcp-clip", backbone=tiny_backbone)


def _pixels(count: int, size: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- end to end ---------------------------------------------------------------------------------------------
def test_forward_shapes_finite_and_in_range(method, tiny_backbone, tiny_pixels):
    size = tiny_backbone.image_size
    assert not method.training  # loaded ready to predict
    maps, scores = method.predict(tiny_pixels)
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert ((maps >= 0) & (maps <= 1)).all()  # a blurred blend of probabilities


def test_predict_accepts_uint8_rgb_arrays(method, tiny_backbone):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    maps, scores = method.predict(images)
    assert maps.shape == (2, tiny_backbone.image_size, tiny_backbone.image_size)
    assert torch.isfinite(maps).all() and scores.shape == (2,)


def test_official_defaults_overrides_and_own_weights_only(method, tiny_backbone):
    config = VcpClipConfig()
    assert config.backbone == "ViT-L-14-336:openai" and config.image_size == 518 and config.taps is None
    assert config.backbone_activation == "gelu" and config.pos_interpolation == "bicubic"
    assert (config.prompt_len, config.deep_prompt_len, config.post_heads) == (2, 1, 8)
    assert (config.alpha, config.sigma, config.topk, config.temperature) == (0.2, 8.0, 2000, 0.07)
    assert (config.lr, config.temperature_lr, config.betas) == (4e-5, 0.01, (0.5, 0.999))
    assert (config.epochs, config.batch_size, config.seed) == (10, 32, 333)
    assert VcpClip.learnable and not VcpClip.uses_class_name
    assert method.taps == (1, 2, 3, 4)  # quarter points of 4 blocks (6/12/18/24 on ViT-L)
    assert torch.allclose(method.tau_pre.exp(), torch.tensor(1 / 0.07))
    assert all(not key.startswith(("layout", "backbone", "_backbone")) for key in method.state_dict())
    bigger = load_method("vcp-clip", backbone=tiny_backbone, prompt_len=3, deep_prompt_len=2, post_heads=4)
    assert bigger.context.query.shape == (3, tiny_backbone.text_width)
    assert bigger.text_prompts.deep.shape == (1, 2, tiny_backbone.text_width)  # 2 text layers -> 1 deep layer
    assert bigger.post.heads == 4
    with pytest.raises(ValueError, match="divide"):
        load_method("vcp-clip", backbone=tiny_backbone, post_heads=5)


def test_joint_dim_must_equal_text_width():
    stub = types.SimpleNamespace(num_layers=4, width=96, embed_dim=32, text_width=64)
    with pytest.raises(ValueError, match="joint dimension equals its text width"):
        VcpClip(stub, VcpClipConfig())


# -- batch invariance and dropout ---------------------------------------------------------------------------
def test_batch_invariance(method, tiny_backbone):
    pixels = _pixels(3, tiny_backbone.image_size)
    method.eval()
    maps, scores = method.predict(pixels)
    for i in range(3):
        single_maps, single_scores = method.predict(pixels[i : i + 1])
        torch.testing.assert_close(single_maps[0], maps[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(single_scores[0], scores[i], atol=1e-5, rtol=0)


def test_prompt_dropout_only_in_training_mode(method, tiny_backbone):
    pixels = _pixels(2, tiny_backbone.image_size)
    with torch.no_grad():
        method.train()
        torch.manual_seed(0)
        first = method(pixels).maps
        second = method(pixels).maps
        assert not torch.allclose(first, second)  # dropout on the text prompts
        predicted = method.predict(pixels).maps  # predict switches to eval ...
        assert method.training  # ... and back
        method.eval()
        torch.testing.assert_close(method(pixels).maps, method(pixels).maps, atol=0, rtol=0)
        torch.testing.assert_close(method(pixels).maps, predicted, atol=0, rtol=0)


# -- formulas -----------------------------------------------------------------------------------------------
def test_post_vcp_attention_matches_a_per_head_loop():
    torch.manual_seed(0)
    module = TextQueryAttention(query_dim=8, width=12, heads=3)
    text, patches = torch.randn(2, 2, 8), F.normalize(torch.randn(2, 10, 12), dim=-1)
    with torch.no_grad():
        ours = module(text, patches)
        for b in range(2):
            q = text[b] @ module.query.weight.T + module.query.bias
            k = patches[b] @ module.key.weight.T + module.key.bias
            v = patches[b] @ module.value.weight.T + module.value.bias
            heads, scaled = [], []
            for h in range(3):
                part = slice(4 * h, 4 * h + 4)
                logits = q[:, part] @ k[:, part].T  # (C, N): no 1/sqrt(d)
                heads.append(torch.softmax(logits, dim=-1) @ v[:, part])  # softmax over the patches
                scaled.append(torch.softmax(logits / 2.0, dim=-1) @ v[:, part])
            expected = F.normalize(torch.cat(heads, dim=-1) @ module.out.weight.T + module.out.bias, dim=-1)
            torch.testing.assert_close(ours[b], expected, atol=1e-6, rtol=1e-5)  # replaces the text: no residual
            with_scaling = F.normalize(torch.cat(scaled, dim=-1) @ module.out.weight.T + module.out.bias, dim=-1)
            assert not torch.allclose(ours[b], with_scaling, atol=1e-4)
    assert torch.allclose(ours.norm(dim=-1), torch.ones(2, 2))


@pytest.mark.parametrize("prompt_len", [2, 3])
def test_class_token_slots_move_the_eot_by_r_minus_one(tiny_backbone, prompt_len):
    vcp = load_method("vcp-clip", backbone=tiny_backbone, prompt_len=prompt_len)
    tokens = tiny_backbone.tokenize(["a photo of a good X", "a photo of a damaged X"])
    assert torch.equal(vcp.layout.eot, eot_index(tokens) + prompt_len - 1)
    placeholder = (tokens == tiny_backbone.token_ids("X")[0]).int().argmax(-1)
    context = torch.randn(2, prompt_len, tiny_backbone.text_width)
    filled = vcp.layout.fill(context)  # (B, 2, L, W)
    for j in range(2):
        p = int(placeholder[j])
        plain = tiny_backbone.token_embeddings(tokens[j : j + 1])[0]
        assert torch.equal(filled[:, j, p : p + prompt_len], context)
        assert torch.equal(filled[:, j, :p], plain[:p].expand(2, -1, -1))
        assert torch.equal(filled[:, j, p + prompt_len :], plain[p + 1 : 77 - prompt_len + 1].expand(2, -1, -1))


def _official_text(backbone, vcp, global_embedding):
    """The official encoder restated: one image and one sentence at a time, prompt inserted after positions."""
    model, config, prompts = backbone.model, vcp.config, vcp.text_prompts
    r, n = config.prompt_len, config.deep_prompt_len
    templates = (config.normal_template, config.abnormal_template)
    tokens = backbone.tokenize([t.format(config.placeholder) for t in templates])
    placeholder = backbone.token_ids(config.placeholder)[0]
    context = vcp.context(global_embedding)
    length = tokens.shape[1]
    images = []
    for i in range(global_embedding.shape[0]):
        sentences = []
        for j in range(2):
            words = model.token_embedding(tokens[j])
            p = int((tokens[j] == placeholder).nonzero()[0])
            x = torch.cat([words[:p], context[i], words[p + 1 : length - r + 1]])[None] + model.positional_embedding
            x = torch.cat([x[:, :1], prompts.proj(prompts.shallow)[None], x[:, 1:-n]], dim=1)
            for layer, block in enumerate(model.transformer.resblocks):
                if layer >= 1:
                    x = torch.cat([x[:, :1], prompts.proj(prompts.deep[layer - 1])[None], x[:, 1 + n :]], dim=1)
                x = block(x, attn_mask=model.attn_mask)
            x = model.ln_final(prompts.norm(torch.cat([x[:, :1], x[:, 1 + n :]], dim=1)))  # prompt rows removed
            pooled = x[0, int(tokens[j].argmax()) + r - 1]
            projection = model.text_projection
            pooled = projection(pooled) if isinstance(projection, torch.nn.Linear) else pooled @ projection
            sentences.append(F.normalize(pooled, dim=-1))
        images.append(torch.stack(sentences))
    return torch.stack(images)


def test_one_batched_text_call_equals_the_official_per_image_encoding(method, tiny_backbone, monkeypatch):
    method.eval()
    global_embedding = torch.randn(3, tiny_backbone.embed_dim, generator=torch.Generator().manual_seed(2)) * 3
    calls = []
    original = tiny_backbone.encode_embeddings

    def counted(embeddings, *args, **kwargs):
        calls.append(embeddings.shape[0])
        return original(embeddings, *args, **kwargs)

    monkeypatch.setattr(tiny_backbone, "encode_embeddings", counted)
    with torch.no_grad():
        ours = method.encode_text(global_embedding)
    monkeypatch.undo()
    with torch.no_grad():
        expected = _official_text(tiny_backbone, method, global_embedding)
    assert calls == [6]  # one text-encoder call for B x 2 prompts
    assert ours.shape == (3, 2, tiny_backbone.embed_dim)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_branch_maps_match_an_explicit_computation(method, tiny_backbone):
    method.eval()
    pixels, size = _pixels(2, tiny_backbone.image_size), tiny_backbone.image_size
    with torch.no_grad():
        pre, post = method.branch_probabilities(pixels)
        features = tiny_backbone.encode_image(pixels, method.taps)
        text = method.encode_text(features.global_embedding)
        rows, cols = tiny_backbone.grid
        for t, tap in enumerate(method.taps):
            for b in range(2):
                tokens = features.raw[tap][b, 1:]
                head = method.pre_heads[t]
                mapped = F.normalize(tokens @ head.weight.T + head.bias, dim=-1)
                dense = F.normalize(tokens, dim=-1)
                refined = method.post(text[b : b + 1], dense[None])[0]
                for branch, logits in (
                    (pre, method.tau_pre.exp() * mapped @ text[b].T),
                    (post, method.tau_post.exp() * dense @ refined.T),
                ):
                    grid = logits.T.reshape(1, 2, rows, cols)
                    up = F.interpolate(grid, size=(size, size), mode="bilinear", align_corners=True)
                    torch.testing.assert_close(branch[t, b], up[0].softmax(0), atol=1e-5, rtol=1e-5)


def test_fused_map_and_score(method, tiny_backbone):
    pixels = _pixels(2, tiny_backbone.image_size)
    with torch.no_grad():
        pre, post = method.branch_probabilities(pixels)
        maps, scores = method.predict(pixels)
    pre_map, post_map = pre[:, :, 1].mean(0).numpy(), post[:, :, 1].mean(0).numpy()
    for b in range(2):
        fused = gaussian_filter(0.2 * pre_map[b].astype(np.float64) + 0.8 * post_map[b], sigma=8)
        np.testing.assert_allclose(maps[b].numpy(), fused, atol=1e-5)
        k = min(2000, pre_map[b].size)
        top = [np.sort(m[b].ravel())[-k:].mean() for m in (pre_map, post_map)]
        assert abs(float(scores[b]) - (top[0] + top[1]) / 2) < 1e-5


# -- training -----------------------------------------------------------------------------------------------
def _square_batch(size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    pixels = torch.randn(4, 3, size, size, generator=generator) * 0.5
    masks = torch.zeros(4, size, size)
    for i, (top, left) in enumerate([(8, 8), (30, 20), (16, 36), (40, 40)]):
        masks[i, top : top + 16, left : left + 16] = 1.0
    pixels = pixels + 2.5 * masks[:, None]
    return {"pixels": pixels, "masks": masks, "labels": torch.ones(4, dtype=torch.long)}


def test_only_own_parameters_get_gradients(method, tiny_backbone):
    method.train()
    method.loss(_square_batch(tiny_backbone.image_size)).backward()
    own = dict(method.named_parameters())
    assert own and all(p.grad is not None and p.grad.abs().sum() > 0 for p in own.values()), [
        name for name, p in own.items() if p.grad is None
    ]
    assert all(p.grad is None and not p.requires_grad for p in tiny_backbone.parameters())
    optimizer = method.configure_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    assert [g["lr"] for g in optimizer.param_groups] == [4e-5, 0.01]
    assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    temperatures = optimizer.param_groups[1]["params"]
    assert len(temperatures) == 2 and temperatures[0] is method.tau_pre and temperatures[1] is method.tau_post
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(own)


def test_loss_decreases_on_synthetic_squares(tiny_backbone):
    torch.manual_seed(0)
    vcp = load_method("vcp-clip", backbone=tiny_backbone, lr=1e-3)
    batch = _square_batch(tiny_backbone.image_size)
    optimizer = vcp.configure_optimizer()
    vcp.train()
    losses = []
    for _ in range(25):
        optimizer.zero_grad()
        loss = vcp.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses


def test_weights_round_trip_and_bad_artifacts_are_refused(method, tiny_backbone, tmp_path):
    with torch.no_grad():  # move every weight away from its initial value
        for parameter in method.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    pixels = _pixels(2, tiny_backbone.image_size)
    artifact = save_prompts(method, tmp_path / "vcp")
    torch.manual_seed(123)
    fresh = load_method("vcp-clip", backbone=tiny_backbone, weights=artifact)
    for key, value in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    torch.testing.assert_close(fresh.predict(pixels).maps, method.predict(pixels).maps, atol=0, rtol=0)

    def corrupted(name: str, edit) -> object:
        copy = tmp_path / name
        shutil.copytree(artifact, copy)
        edit(copy)
        return copy

    def edit_manifest(key: str, value: object):
        def edit(directory):
            manifest = json.loads((directory / MANIFEST_FILE).read_text())
            manifest[key] = value
            (directory / MANIFEST_FILE).write_text(json.dumps(manifest))

        return edit

    def flip_a_byte(directory):
        data = bytearray((directory / WEIGHTS_FILE).read_bytes())
        data[-1] ^= 0xFF
        (directory / WEIGHTS_FILE).write_bytes(data)

    target = load_method("vcp-clip", backbone=tiny_backbone)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    for name, edit, message in (
        ("backbone", edit_manifest("backbone", "ViT-L-14-336:openai@518"), "backbone"),
        ("taps", edit_manifest("taps", [1, 2, 3]), "taps"),
        ("altered", flip_a_byte, "sha256"),
    ):
        with pytest.raises(IncompatibleWeightsError, match=message):
            load_prompts(target, corrupted(name, edit))
    assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())  # untouched


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        VcpClipConfig().alpha = 0.5  # type: ignore[misc]


# -- a real-size architecture -------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b16_shapes_and_finiteness():
    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-16", image_size=224)
    vcp = load_method("vcp-clip", backbone=backbone)
    assert vcp.taps == (3, 6, 9, 12)
    assert vcp.text_prompts.deep.shape == (11, 1, 512)
    maps, scores = vcp.predict(_pixels(1, 224))
    assert maps.shape == (1, 224, 224) and scores.shape == (1,)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
