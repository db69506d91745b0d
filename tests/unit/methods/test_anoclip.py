"""AnoCLIP / AnoCLIP+ against independent computations on the tiny backbone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import zsad_core.methods.anoclip  # noqa: F401  (registers "anoclip" and "anoclip+")
from zsad_core.backbone import SurgeryConfig, build_backbone
from zsad_core.methods import get_method_config, load_method
from zsad_core.methods.anoclip.model import anomaly_map, view_score
from zsad_core.methods.anoclip.prompts import (
    NORMAL_STATES,
    OBJECT_TEMPLATES,
    TEXTURE_TEMPLATES,
    encode_state_prompts,
)
from zsad_core.methods.anoclip.tta import adapt_tokens, tta_loss
from zsad_core.methods.anoclip.views import (
    FIRST_QUARTER_TURN,
    FIRST_TRANSLATION,
    GRAYSCALE,
    HFLIP,
    NUM_VIEWS,
    grayscale,
    official_views,
)

NAMES = ("anoclip", "anoclip+")
CASES = (("anoclip", "object"), ("anoclip+", "object"), ("anoclip+", "texture"))
SHORT = ("a photo of a {}",)  # one template: 14 sentences, for tests about something else than the prompts


@pytest.fixture(scope="module")
def methods(tiny_backbone):
    """Instances with the official prompts, built once (each setup encodes 924 sentences)."""
    return {case: load_method(case[0], backbone=tiny_backbone, class_name="bottle", domain=case[1]) for case in CASES}


def _pixels(count: int, size: int, seed: int = 3) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


# -- 1. contract -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "domain"), CASES)
def test_output_contract(methods, tiny_backbone, name, domain):
    size = tiny_backbone.image_size
    result = methods[name, domain].predict(_pixels(2, size))
    assert result.maps.shape == (2, size, size) and result.scores.shape == (2,)
    assert result.maps.dtype == torch.float32 and result.scores.dtype == torch.float32
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.scores).all()
    assert ((result.maps > 0) & (result.maps < 1)).all()
    assert ((result.scores >= 0) & (result.scores <= 1)).all()


def test_predict_accepts_uint8_rgb_arrays(methods, tiny_backbone):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    result = methods["anoclip+", "object"].predict(images)
    assert result.maps.shape == (2, tiny_backbone.image_size, tiny_backbone.image_size)
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.scores).all()


def test_config_defaults_and_overrides(tiny_backbone):
    config = get_method_config("anoclip+")
    assert (config.backbone, config.image_size, config.image_views) == ("ViT-B-16-plus-240:laion400m_e32", 240,
                                                                         "official22")
    assert (config.tta_steps, config.tta_lr, config.noise_std, config.adapter) == (5, 1e-3, 0.055, "text_anchored")
    assert len(config.object_templates) == len(set(config.object_templates)) == 66
    method = load_method("anoclip+", backbone=tiny_backbone, adapter="linear", tta_steps=2, image_views="none",
                         object_templates=SHORT)
    assert method.taps == (tiny_backbone.num_layers,)  # last block, not the quarter points
    assert torch.isfinite(method.predict(_pixels(1, tiny_backbone.image_size)).maps).all()
    with pytest.raises(ValueError, match="one V-V layer"):
        load_method("anoclip", backbone=tiny_backbone, taps=(2, 4))
    with pytest.raises(ValueError, match="adapter"):
        load_method("anoclip+", backbone=tiny_backbone, adapter="mlp")
    with pytest.raises(ValueError, match="image_views"):
        load_method("anoclip", backbone=tiny_backbone, image_views="tta")


def test_text_state_follows_domain_and_is_not_persistent(methods, tiny_backbone):
    method = methods["anoclip+", "texture"]
    sentences = [t.format(s.format("bottle")) for s in NORMAL_STATES for t in TEXTURE_TEMPLATES]
    raw = tiny_backbone.encode_text(sentences)  # the normal texture ensemble, encoded independently
    torch.testing.assert_close(method.text[0], raw.mean(0) / raw.mean(0).norm(), atol=1e-5, rtol=1e-5)
    assert method.sentences.shape == (2 * 7 * 66, tiny_backbone.embed_dim)
    torch.testing.assert_close(method.sentences[: len(sentences)], F.normalize(raw, dim=-1), atol=1e-5, rtol=1e-5)
    assert dict(method.state_dict()) == {}
    assert not torch.allclose(methods["anoclip+", "object"].text, method.text)
    assert not set(OBJECT_TEMPLATES) & {t for t in TEXTURE_TEMPLATES if "industrial" not in t}


def test_class_alias_is_applied(tiny_backbone):
    method = load_method("anoclip", backbone=tiny_backbone, class_name="macaroni1", object_templates=SHORT)
    text, _ = encode_state_prompts(tiny_backbone, "macaroni", method.config.normal_states,
                                   method.config.abnormal_states, SHORT)
    torch.testing.assert_close(method.text, text)


# -- 2. batch invariance -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_each_image_alone(methods, tiny_backbone, name):
    method = methods[name, "object"]
    pixels = _pixels(2, tiny_backbone.image_size, seed=7)
    batched = method.predict(pixels)
    for i in range(2):
        alone = method.predict(pixels[i : i + 1])
        torch.testing.assert_close(batched.maps[i : i + 1], alone.maps, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched.scores[i : i + 1], alone.scores, atol=1e-5, rtol=0)


# -- 3. formulas ---------------------------------------------------------------------------------------------------
def _bilinear_align_corners(grid: np.ndarray, size: int) -> np.ndarray:
    """Textbook bilinear interpolation with the corner pixels on the corner cells."""
    rows, cols = grid.shape
    out = np.empty((size, size))
    for y in range(size):
        for x in range(size):
            fy, fx = y * (rows - 1) / (size - 1), x * (cols - 1) / (size - 1)
            y0, x0 = min(int(fy), rows - 2), min(int(fx), cols - 2)
            wy, wx = fy - y0, fx - x0
            out[y, x] = ((1 - wy) * (1 - wx) * grid[y0, x0] + (1 - wy) * wx * grid[y0, x0 + 1]
                         + wy * (1 - wx) * grid[y0 + 1, x0] + wy * wx * grid[y0 + 1, x0 + 1])
    return out


def test_map_matches_per_token_loop():
    rows, cols, dim, size = 4, 5, 6, 13
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randn(1, rows * cols, dim, generator=generator, dtype=torch.float64) * 3
    text = torch.randn(2, dim, generator=generator, dtype=torch.float64)
    result = anomaly_map(tokens, text, (rows, cols), size)[0].numpy()

    t_n, t_a = (text[c].numpy() / np.linalg.norm(text[c].numpy()) for c in range(2))
    prob = np.empty((rows, cols))
    for i in range(rows * cols):
        x = tokens[0, i].numpy() / np.linalg.norm(tokens[0, i].numpy())
        s_n, s_a = float(x @ t_n), float(x @ t_a)
        prob[i // cols, i % cols] = math.exp(s_a) / (math.exp(s_n) + math.exp(s_a))  # no temperature
    smooth = np.empty_like(prob)
    for r in range(rows):
        for c in range(cols):
            cells = [prob[min(max(r + dr, 0), rows - 1), min(max(c + dc, 0), cols - 1)]
                     for dr in (-1, 0, 1) for dc in (-1, 0, 1)]  # replicate padding
            smooth[r, c] = sum(cells) / 9
    np.testing.assert_allclose(result, _bilinear_align_corners(smooth, size), atol=1e-10)


def test_forward_uses_last_vv_tokens_and_original_global(tiny_backbone):
    method = load_method("anoclip", backbone=tiny_backbone, class_name="bottle", image_views="none",
                         object_templates=SHORT)
    pixels = _pixels(2, tiny_backbone.image_size)
    with torch.inference_mode():
        last = tiny_backbone.num_layers
        vv = tiny_backbone.encode_image(pixels, taps=[last], surgery=SurgeryConfig(1, "residual"))
        plain = tiny_backbone.model.encode_image(pixels)
        result = method.predict(pixels)
    expected = anomaly_map(vv.vv_projected[last][:, 1:], method.text, tiny_backbone.grid, tiny_backbone.image_size)
    torch.testing.assert_close(result.maps, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.scores, view_score(plain[:, None], method.text), atol=1e-6, rtol=0)


def test_score_averages_the_22_views(methods, tiny_backbone):
    method = methods["anoclip", "object"]
    pixels = _pixels(2, tiny_backbone.image_size, seed=5)
    source = tiny_backbone.source
    with torch.inference_mode():
        views = official_views(pixels, source.mean, source.std)
        embeddings = tiny_backbone.model.encode_image(views.flatten(0, 1)).view(2, NUM_VIEWS, -1)
        probs = (F.normalize(embeddings, dim=-1) @ F.normalize(method.text, dim=-1).T).softmax(-1)[..., 1]
        result = method.predict(pixels)
    torch.testing.assert_close(result.scores, probs.mean(1), atol=1e-6, rtol=0)


def test_tta_loss_matches_formula():
    clean = torch.tensor([[[0.8, 0.2], [0.3, 0.7]]])
    noisy = torch.tensor([[[0.6, 0.4], [0.1, 0.9]]])
    entropy = -(0.8 * math.log(0.8) + 0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.7 * math.log(0.7)) / 2
    pseudo = (-math.log(0.4) - math.log(0.8) - math.log(0.9) - math.log(0.3)) / 2
    torch.testing.assert_close(tta_loss(clean, noisy), torch.tensor([entropy + 0.5 * pseudo]))
    two = tta_loss(torch.cat([clean, noisy.flip(-1)]), torch.cat([noisy, clean]))
    assert two.shape == (2,) and torch.isclose(two[0], tta_loss(clean, noisy)[0])


def _tta_inputs(batch: int = 3, count: int = 6, dim: int = 8, sentences: int = 10):
    generator = torch.Generator().manual_seed(11)
    tokens = torch.randn(batch, count, dim, generator=generator)
    text = torch.randn(2, dim, generator=generator)
    anchors = F.normalize(torch.randn(sentences, dim, generator=generator), dim=-1)
    return tokens, text, anchors


def _reference_tta(tokens, text, anchors, adapter, steps=5, lr=1e-3, noise_std=0.055, seed=111):
    """One image, written like the AnoVL script: an nn.Linear reset by PyTorch's default init, AdamW."""
    count, dim = tokens.shape
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        layer = torch.nn.Linear(dim, anchors.shape[0] if adapter == "text_anchored" else dim)
        optimizer = torch.optim.AdamW(layer.parameters(), lr)

        def adapt(x):
            hidden = layer(x / x.norm(dim=-1, keepdim=True))
            return 0.5 * x + 0.5 * (torch.tanh(hidden) @ anchors if adapter == "text_anchored" else hidden)

        def probs(x):
            x = adapt(x)
            return (x / x.norm(dim=-1, keepdim=True) @ (text / text.norm(dim=-1, keepdim=True)).T).softmax(-1)

        for _ in range(steps):
            noise = torch.normal(0.0, noise_std, (count, dim))
            clean, noisy = probs(tokens), probs(tokens + noise)
            loss = (-(clean * clean.log()).sum(-1).mean()
                    + 0.5 * (-noisy[:, 1].log() - clean[:, 0].log()).mean())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            return adapt(tokens)


@pytest.mark.parametrize("adapter", ["text_anchored", "linear"])
def test_batched_tta_equals_per_image_reference(adapter):
    tokens, text, anchors = _tta_inputs()
    batched = adapt_tokens(tokens, text, anchors, adapter=adapter)
    assert not torch.allclose(batched, tokens)  # the adapter did something
    for i in range(tokens.shape[0]):
        alone = adapt_tokens(tokens[i : i + 1], text, anchors, adapter=adapter)
        torch.testing.assert_close(batched[i : i + 1], alone, atol=1e-5, rtol=0)
        torch.testing.assert_close(batched[i], _reference_tta(tokens[i], text, anchors, adapter), atol=1e-5, rtol=0)


def test_tta_runs_inside_inference_mode():
    tokens, text, anchors = _tta_inputs(batch=2)
    with torch.inference_mode():
        inside = adapt_tokens(tokens.clone(), text.clone(), anchors.clone(), steps=3)
    torch.testing.assert_close(inside, adapt_tokens(tokens, text, anchors, steps=3))


def test_views_count_identity_flip_rot90_translation():
    size = 11
    pixels = _pixels(2, size, seed=9)
    views = official_views(pixels, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    assert views.shape == (2, NUM_VIEWS, 3, size, size) and NUM_VIEWS == 22
    assert torch.equal(views[:, 0], pixels)
    assert torch.equal(views[:, HFLIP], torch.flip(pixels, dims=[-1]))
    for k in (1, 2, 3):
        assert torch.equal(views[:, FIRST_QUARTER_TURN + k - 1], torch.rot90(pixels, k, dims=[-2, -1]))
    # (0.2, 0.2) in [-1, 1] units on 11 px with align_corners=True is exactly one pixel: out[i, j] = in[i+1, j+1].
    torch.testing.assert_close(views[:, FIRST_TRANSLATION, :, :-1, :-1], pixels[:, :, 1:, 1:], atol=1e-5, rtol=0)
    # every small rotation keeps the centre pixel of an odd-sized image
    torch.testing.assert_close(views[:, 1:9, :, 5, 5], pixels[:, None, :, 5, 5].expand(2, 8, 3), atol=1e-5, rtol=0)


def test_grayscale_view_is_luma_of_the_real_image():
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    rgb = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    normalised = (rgb - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    expected = (luma[:, None] - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(grayscale(normalised, mean, std), expected)
    views = official_views(normalised, mean, std)
    torch.testing.assert_close(views[:, GRAYSCALE], expected)
    legacy = grayscale(normalised, mean, std, on_normalized=True)  # the script's luma of normalised values
    torch.testing.assert_close(legacy[:, 2], 0.299 * normalised[:, 0] + 0.587 * normalised[:, 1]
                               + 0.114 * normalised[:, 2])


# -- 4. real size ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_size_vit_b16_random_weights():
    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-16", image_size=224)
    # a short template list keeps the 12-layer text tower cheap on CPU; the image side is full size
    method = load_method("anoclip+", backbone=backbone, image_views="none", object_templates=("a photo of a {}",))
    result = method.predict(_pixels(1, 224))
    assert result.maps.shape == (1, 224, 224) and result.scores.shape == (1,)
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.scores).all()
