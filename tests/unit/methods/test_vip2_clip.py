"""ViP²-CLIP: shapes, batch invariance, the core formulas against explicit computations, training, artifacts."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zsad_core.methods.vip2_clip as vip2  # registers "vip2-clip"
from zsad_core.artifacts import load_prompts, save_prompts
from zsad_core.backbone import build_backbone
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.methods import get_method_config, load_method
from zsad_core.methods.heads import TextQueryAttention
from zsad_core.methods.ops import gaussian_blur, upsample
from zsad_core.methods.vip2_clip.prompts import STATE_WORDS


@pytest.fixture
def method(tiny_backbone):
    torch.manual_seed(0)
    return load_method("vip2-clip", backbone=tiny_backbone)


def _perturb(method, seed: int = 3) -> None:
    """Move every weight away from its initial value, as training would."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in method.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))


# -- 1. contract ------------------------------------------------------------------------------------------------
def test_forward_shapes_finite_and_scores_in_range(method, tiny_backbone, tiny_pixels):
    maps, scores = method.predict(tiny_pixels)
    size = tiny_backbone.image_size
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert ((maps >= 0) & (maps <= 1)).all()  # (P_abn + 1 - P_norm) / 2 is a probability


def test_predict_accepts_uint8_rgb_arrays(method, tiny_backbone):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    maps, scores = method.predict(images)
    assert maps.shape == (2, tiny_backbone.image_size, tiny_backbone.image_size)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()


def test_official_defaults_and_overrides(tiny_backbone):
    config = get_method_config("vip2-clip")
    assert (config.backbone, config.image_size, config.pos_interpolation) == ("ViT-L-14-336:openai", 518, "bilinear")
    assert (config.n_ctx, config.n_cls, config.fgp_heads, config.topk, config.sigma) == (7, 3, 8, 50, 8.0)
    assert (config.epochs, config.batch_size, config.seed, config.lr, config.fgp_lr) == (10, 8, 111, 1e-3, 1e-5)
    assert config.temperature == 0.07 and config.official_state_word_quirk is False
    method = load_method("vip2-clip", backbone=tiny_backbone, n_ctx=4, fgp_heads=4, official_state_word_quirk=True)
    assert method.config.n_ctx == 4 and method.prompts.context_normal.shape == (4, tiny_backbone.text_width)
    assert method.fgp.heads == 4 and method.config.official_state_word_quirk
    assert method.taps == (1, 2, 3, 4)  # quarter points of the 4-block tiny ViT (6/12/18/24 on ViT-L)
    assert method.learnable and not method.uses_class_name


# -- 2. batch invariance --------------------------------------------------------------------------------------
def test_batch_invariance(method, tiny_backbone):
    _perturb(method)
    size = tiny_backbone.image_size
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(5))
    maps, scores = method.predict(pixels)
    for i in range(3):
        single_maps, single_scores = method.predict(pixels[i : i + 1])
        torch.testing.assert_close(single_maps[0], maps[i], atol=1e-5, rtol=0)
        torch.testing.assert_close(single_scores[0], scores[i], atol=1e-5, rtol=0)


# -- 3. core formulas -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("heads", [1, 4, 8])
def test_fgp_matches_per_head_loop(heads):
    torch.manual_seed(0)
    dim, batch, patches_count = 64, 3, 10
    fgp = TextQueryAttention(dim, dim, heads)
    text = F.normalize(torch.randn(batch, 2, dim), dim=-1)
    patches = F.normalize(torch.randn(batch, patches_count, dim), dim=-1)
    with torch.no_grad():
        q, k, v = fgp.query(text), fgp.key(patches), fgp.value(patches)
        d = dim // heads
        expected = torch.zeros(batch, 2, dim)
        for b in range(batch):
            parts = []
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                weights = torch.softmax(q[b, :, sl] @ k[b, :, sl].T, dim=-1)  # (2, N): unscaled, over patches
                parts.append(weights @ v[b, :, sl])
            expected[b] = F.normalize(fgp.out(torch.cat(parts, dim=-1)), dim=-1)
        ours = fgp(text, patches)
        stacked = fgp(text.expand(4, -1, -1, -1), patches.expand(4, -1, -1, -1))  # taps as a leading dim
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(stacked, expected.expand(4, -1, -1, -1), atol=1e-6, rtol=1e-5)
    assert not torch.allclose(ours, text, atol=1e-3)  # the output replaces the input, no residual


def test_fgp_heads_must_divide_dimension():
    with pytest.raises(ValueError, match="divide"):
        TextQueryAttention(64, 64, 5)


def test_image_score_matches_hand_computation(tiny_backbone, tiny_pixels):
    torch.manual_seed(0)
    method = load_method("vip2-clip", backbone=tiny_backbone, topk=5)
    _perturb(method)
    with torch.no_grad():
        similarities = method.similarities(tiny_pixels)  # (L, B, N, 2)
        _maps, scores = method(tiny_pixels)
    layers, batch = similarities.shape[:2]
    for b in range(batch):
        rows = []
        for layer in range(layers):
            sims = similarities[layer, b].tolist()
            abnormal = [np.exp(s[1] / 0.07) / (np.exp(s[0] / 0.07) + np.exp(s[1] / 0.07)) for s in sims]
            best = sorted(range(len(sims)), key=lambda i: -abnormal[i])[:5]
            rows += [sims[i] for i in best]
        mean = np.mean(rows, axis=0)  # (2,) mean raw similarity of the L*K chosen patches
        expected = np.exp(mean[1] / 0.07) / (np.exp(mean[0] / 0.07) + np.exp(mean[1] / 0.07))
        assert scores[b].item() == pytest.approx(expected, abs=1e-5)


def test_topk_is_clipped_to_the_grid():
    similarities = torch.rand(2, 1, 4, 2)
    probs = (similarities / 0.07).softmax(-1)
    torch.testing.assert_close(vip2.image_logits(similarities, probs, 50), similarities.mean(dim=(0, 2)))


def test_map_equals_official_order_upsample_each_layer_then_average(method, tiny_backbone, tiny_pixels):
    _perturb(method)
    with torch.no_grad():
        similarities = method.similarities(tiny_pixels)
        maps, _scores = method(tiny_pixels)
    probs = (similarities / 0.07).softmax(-1)
    size, (rows, cols) = tiny_backbone.image_size, tiny_backbone.grid
    per_layer = []
    for layer in probs:  # (B, N, 2) -> (B, 2, S, S), as the official get_similarity_map
        up = upsample(layer.reshape(-1, rows, cols, 2).permute(0, 3, 1, 2), size, align_corners=False)
        per_layer.append((up[:, 1] + 1 - up[:, 0]) / 2)
    expected = gaussian_blur(torch.stack(per_layer).mean(0), sigma=8.0)
    torch.testing.assert_close(maps, expected, atol=1e-6, rtol=1e-5)


def test_one_text_encoder_call_per_batch(method, tiny_backbone, monkeypatch):
    calls = []
    original = tiny_backbone.encode_embeddings

    def counting(embeddings, eot, *args, **kwargs):
        calls.append(embeddings.shape[0])
        return original(embeddings, eot, *args, **kwargs)

    monkeypatch.setattr(tiny_backbone, "encode_embeddings", counting)
    method.predict(torch.randn(3, 3, tiny_backbone.image_size, tiny_backbone.image_size))
    assert calls == [6]  # B x 2 prompts in a single call


def test_batched_prompt_encoding_equals_each_image_alone(method, tiny_backbone):
    _perturb(method)
    image = F.normalize(torch.randn(4, tiny_backbone.embed_dim), dim=-1)
    with torch.no_grad():
        together = method.encode_prompts(image)
        alone = torch.cat([method.encode_prompts(image[i : i + 1]) for i in range(4)])
    assert together.shape == (4, 2, tiny_backbone.embed_dim)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(together.norm(dim=-1), torch.ones(4, 2))


def test_prompts_fill_the_official_layout(method, tiny_backbone):
    image = F.normalize(torch.randn(2, tiny_backbone.embed_dim), dim=-1)
    with torch.no_grad():
        embeddings, eot = method.prompts(image)
    embeddings = embeddings.unflatten(0, (2, 2))  # (B, [normal, abnormal], L, W)
    prompts, n_ctx, n_cls = method.prompts, 7, 3
    class_tokens = prompts.class_tokens + prompts.class_prompter(image)  # c = C + h(g)
    contexts = (prompts.context_normal, prompts.context_abnormal)
    for state, (word, context) in enumerate(zip(STATE_WORDS, contexts, strict=True)):
        sentence = " ".join(["a"] * n_ctx + [word] + ["a"] * n_cls)
        words = tiny_backbone.token_embeddings(tiny_backbone.tokenize([sentence]))[0]  # [SOS] ... word ... [EOS]
        for b in range(2):
            row = embeddings[b, state]
            assert torch.equal(row[0], words[0])  # SOS
            assert torch.equal(row[1 : 1 + n_ctx], context)
            assert torch.equal(row[1 + n_ctx], words[1 + n_ctx])  # the state word
            torch.testing.assert_close(row[2 + n_ctx : 2 + n_ctx + n_cls], class_tokens[b])
            assert torch.equal(row[2 + n_ctx + n_cls :], words[2 + n_ctx + n_cls :])  # EOS and padding
    assert eot.tolist() == [2 + n_ctx + n_cls] * 4


def test_quirk_changes_only_the_normal_prompt(tiny_backbone):
    fixed = vip2.Vip2Clip(tiny_backbone, vip2.Vip2ClipConfig())
    quirk = vip2.Vip2Clip(tiny_backbone, vip2.Vip2ClipConfig(official_state_word_quirk=True))
    quirk.load_state_dict(fixed.state_dict())
    image = F.normalize(torch.randn(2, tiny_backbone.embed_dim), dim=-1)
    with torch.no_grad():
        ours, ours_eot = fixed.prompts(image)
        theirs, theirs_eot = quirk.prompts(image)
        ours_text, theirs_text = fixed.encode_prompts(image), quirk.encode_prompts(image)
    ours, theirs = ours.unflatten(0, (2, 2)), theirs.unflatten(0, (2, 2))
    assert torch.equal(ours[:, 1], theirs[:, 1]) and torch.equal(ours_eot, theirs_eot)
    changed = (ours[:, 0] != theirs[:, 0]).any(-1)  # (B, L): positions where the normal prompt differs
    assert changed[:, 8].all() and not changed[:, :8].any() and not changed[:, 9:].any()  # only the state word
    damaged = tiny_backbone.token_embeddings(torch.tensor([tiny_backbone.token_ids("damaged")]))[0, 0]
    assert torch.equal(theirs[0, 0, 8], damaged)
    assert torch.equal(ours_text[:, 1], theirs_text[:, 1])
    assert not torch.allclose(ours_text[:, 0], theirs_text[:, 0])


def test_joint_dimension_must_equal_text_width(tiny_backbone, monkeypatch):
    monkeypatch.setattr(type(tiny_backbone), "embed_dim", property(lambda self: 32))
    with pytest.raises(ValueError, match="joint dimension equals its text width"):
        vip2.Vip2Clip(tiny_backbone, vip2.Vip2ClipConfig())


# -- 4. training and artifacts -----------------------------------------------------------------------------------
def _synthetic_batch(size: int) -> dict[str, torch.Tensor]:
    """Four noise images; the last two have a brightened 16x16 square, which is their mask."""
    generator = torch.Generator().manual_seed(7)
    pixels = 0.5 * torch.randn(4, 3, size, size, generator=generator)
    masks = torch.zeros(4, size, size)
    for i, (top, left) in zip((2, 3), ((8, 12), (30, 20)), strict=True):
        masks[i, top : top + 16, left : left + 16] = 1.0
    pixels = pixels + 2.0 * masks[:, None]
    return {"pixels": pixels, "masks": masks, "labels": torch.tensor([0, 0, 1, 1])}


def test_only_own_parameters_get_gradients(method, tiny_backbone):
    method.loss(_synthetic_batch(tiny_backbone.image_size)).backward()
    own = method.trainable_parameters()
    assert len(own) == len(list(method.parameters())) and own
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in own)
    assert all(p.grad.abs().sum() > 0 for p in own)
    assert all(p.grad is None for p in tiny_backbone.parameters())
    assert not any(key.startswith(("backbone", "_backbone")) for key in method.state_dict())


def test_optimizer_has_the_official_groups(method):
    optimizer = method.configure_optimizer()
    assert isinstance(optimizer, torch.optim.Adam)
    assert [group["lr"] for group in optimizer.param_groups] == [1e-3, 1e-5]
    assert all(group["betas"] == (0.9, 0.999) for group in optimizer.param_groups)
    fgp_ids = {id(p) for p in method.fgp.parameters()}
    assert {id(p) for p in optimizer.param_groups[1]["params"]} == fgp_ids
    assert len(optimizer.param_groups[0]["params"]) + len(fgp_ids) == len(list(method.parameters()))


def test_loss_decreases_on_a_synthetic_batch(method, tiny_backbone):
    torch.manual_seed(0)
    batch = _synthetic_batch(tiny_backbone.image_size)
    optimizer = method.configure_optimizer()
    with torch.no_grad():
        before = method.loss(batch).item()
    for _ in range(30):
        loss = method.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = method.loss(batch).item()
    assert np.isfinite(after) and after < before - 0.005


def test_artifact_round_trip_is_bit_exact(method, tiny_backbone, tiny_pixels, tmp_path):
    _perturb(method)
    save_prompts(method, tmp_path / "artifact")
    torch.manual_seed(123)
    fresh = load_method("vip2-clip", backbone=tiny_backbone, weights=tmp_path / "artifact")
    for key, value in method.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    expected, loaded = method.predict(tiny_pixels), fresh.predict(tiny_pixels)
    assert torch.equal(expected.maps, loaded.maps) and torch.equal(expected.scores, loaded.scores)


def test_incompatible_or_altered_artifacts_are_refused(method, tiny_backbone, tmp_path):
    save_prompts(method, tmp_path / "good")

    other_backbone = tmp_path / "other_backbone"
    shutil.copytree(tmp_path / "good", other_backbone)
    manifest = json.loads((other_backbone / "manifest.json").read_text())
    manifest["backbone"] = "ViT-L-14-336:openai@518"
    (other_backbone / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleWeightsError, match="backbone"):
        load_prompts(method, other_backbone)

    with pytest.raises(IncompatibleWeightsError, match="taps"):
        load_method("vip2-clip", backbone=tiny_backbone, weights=tmp_path / "good", taps=(2, 4))

    altered = tmp_path / "altered"
    shutil.copytree(tmp_path / "good", altered)
    data = bytearray((altered / "prompts.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (altered / "prompts.safetensors").write_bytes(bytes(data))
    with pytest.raises(IncompatibleWeightsError, match="sha256"):
        load_prompts(method, altered)


def test_official_checkpoint_layout_converts(method, tiny_backbone):
    _perturb(method)
    ours = method.state_dict()
    ica = {
        "cls_ctx": ours["prompts.class_tokens"],
        "ctx_pos": ours["prompts.context_normal"],
        "ctx_neg": ours["prompts.context_abnormal"],
        "cls_prompter.bias": ours["prompts.class_prompter.bias"],
        "token_prefix_pos": torch.zeros(1, 1, 64),  # template buffers of the official module are not weights
        "tokenized_prompts_pos": torch.zeros(1, 77, dtype=torch.long),
    }
    for key, value in ours.items():
        if key.startswith("prompts.class_prompter.mlps."):
            ica["cls_prompter.fc." + key.removeprefix("prompts.class_prompter.mlps.")] = value
    names = {"q_proj_pre": "query", "k_proj_pre_1": "key", "v_proj_pre_1": "value", "proj_post_t": "out"}
    fgp = {"prompt_temp_l1": torch.tensor(2.66)}
    for theirs, mine in names.items():
        fgp[f"{theirs}.weight"] = ours[f"fgp.{mine}.weight"][..., None]  # Conv1d (D, D, 1)
        fgp[f"{theirs}.bias"] = ours[f"fgp.{mine}.bias"]
    fresh = vip2.Vip2Clip(tiny_backbone, vip2.Vip2ClipConfig(official_state_word_quirk=True))
    fresh.load_state_dict(vip2.convert_official_checkpoint({"prompt_learner": ica, "Zero_try": fgp}), strict=True)
    for key, value in ours.items():
        assert torch.equal(fresh.state_dict()[key], value), key


# -- 5. a real-size architecture ------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b16_random_weights_224():
    start = time.perf_counter()
    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-16", image_size=224)  # joint dim 512 = text width 512
    method = load_method("vip2-clip", backbone=backbone)
    maps, scores = method.predict(torch.randn(1, 3, 224, 224))
    assert method.taps == (3, 6, 9, 12)
    assert maps.shape == (1, 224, 224) and scores.shape == (1,)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    assert time.perf_counter() - start < 60
