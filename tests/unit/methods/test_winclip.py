"""WinCLIP (zero-shot) on the tiny backbone, and its formulas against explicit loops written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zsad_core.methods.winclip as winclip  # registers "winclip"
from zsad_core.backbone import build_backbone
from zsad_core.methods import load_method


@pytest.fixture(scope="module")
def method(tiny_backbone):
    return load_method("winclip", backbone=tiny_backbone, class_name="bottle")


# -- end to end ---------------------------------------------------------------------------------------------
def test_forward_shapes_finite_and_in_range(method, tiny_backbone, tiny_pixels):
    size = tiny_backbone.image_size
    maps, scores = method.predict(tiny_pixels)
    assert maps.shape == (2, size, size) and maps.dtype == torch.float32
    assert scores.shape == (2,) and scores.dtype == torch.float32
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
    assert ((scores > 0) & (scores < 1)).all()
    assert ((maps > 0) & (maps < 1)).all()  # harmonic means and bilinear blends of probabilities


def test_predict_accepts_uint8_rgb_arrays(method, tiny_backbone):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    maps, scores = method.predict(images)
    assert maps.shape == (2, tiny_backbone.image_size, tiny_backbone.image_size)
    assert torch.isfinite(maps).all() and scores.shape == (2,)


def test_config_defaults_and_state(method, tiny_backbone):
    config = method.config
    assert config.backbone == "ViT-B-16-plus-240:laion400m_e31" and config.image_size == 240
    assert config.window_sizes == (2, 3) and config.window_stride == 1 and config.temperature == 0.07
    assert len(config.normal_states) == 7 and len(config.anomalous_states) == 4
    assert len(config.templates) == 22 == len(set(config.templates))  # the paper's list, no duplicate
    assert "a cropped photo of a {}." in config.templates
    assert winclip.WinClip.uses_class_name
    assert method.state_dict() == {}  # coverage and text are rebuilt, never saved
    assert method.text_features.shape == (2, tiny_backbone.embed_dim)
    assert method.coverage_2.shape == (16, 9) and method.coverage_3.shape == (16, 4)  # 4x4 grid


def test_text_features_follow_class_name_and_overrides(tiny_backbone):
    bottle = load_method("winclip", backbone=tiny_backbone, class_name="bottle").text_features
    cable = load_method("winclip", backbone=tiny_backbone, class_name="cable").text_features
    assert not torch.allclose(bottle, cable)
    single = load_method(
        "winclip", backbone=tiny_backbone, class_name="bottle", window_sizes=(2,), templates=("a photo of a {}.",)
    )
    # one template: each ensemble vector is the mean of its states' raw embeddings, then normalised
    for index, states in enumerate((winclip.NORMAL_STATES, winclip.ANOMALOUS_STATES)):
        raw = tiny_backbone.encode_text([f"a photo of a {s.format('bottle')}." for s in states])
        torch.testing.assert_close(single.text_features[index], torch.nn.functional.normalize(raw.mean(0), dim=-1))
    assert not hasattr(single, "coverage_3")


def test_scores_match_explicit_computation(method, tiny_backbone, tiny_pixels):
    """Image score and map recomputed with one CLIP pass per window and loops over patches."""
    text = torch.nn.functional.normalize(method.text_features, dim=-1)

    def prob(embedding):
        logits = torch.nn.functional.normalize(embedding, dim=-1) @ text.T / 0.07
        return logits.softmax(-1)[..., 1]

    with torch.inference_mode():
        maps, scores = method.predict(tiny_pixels[:1])
        image_score = prob(tiny_backbone.model.encode_image(tiny_pixels[:1]))[0]
        rows, cols = tiny_backbone.grid
        per_scale = []
        for size in (2, 3):
            windows = _explicit_windows(rows, cols, size)
            window_scores = [prob(_window_embedding(tiny_backbone.model.visual, tiny_pixels[:1], w)) for w in windows]
            per_scale.append(_explicit_harmonic(window_scores, windows, rows * cols))
        patch = [3 / (1 / image_score + 1 / per_scale[0][p] + 1 / per_scale[1][p]) for p in range(rows * cols)]
        patch = torch.stack(patch).reshape(1, 1, rows, cols)
        expected = torch.nn.functional.interpolate(patch, size=tiny_backbone.image_size, mode="bilinear")[:, 0]
    torch.testing.assert_close(scores[0], image_score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)


def _window_embedding(visual, pixels, window):
    """CLS plus the window's patches (position-embedded) as an image of its own, one window at a time."""
    tokens = visual._embeds(pixels)  # (1, 1 + N, W), ln_pre applied (it is per token)
    x = visual.transformer(torch.cat([tokens[:, :1], tokens[:, 1:][:, window]], dim=1))
    return (visual.ln_post(x[:, 0]) @ visual.proj)[0]


# -- batch invariance ------------------------------------------------------------------------------------------
def test_batch_invariance(method, tiny_backbone):
    generator = torch.Generator().manual_seed(7)
    pixels = torch.randn(3, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator)
    maps, scores = method.predict(pixels)
    for i in range(3):
        alone_maps, alone_scores = method.predict(pixels[i : i + 1])
        torch.testing.assert_close(maps[i : i + 1], alone_maps, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(scores[i : i + 1], alone_scores, atol=1e-5, rtol=1e-5)


# -- formulas ---------------------------------------------------------------------------------------------------
def _explicit_windows(rows, cols, size, stride=1):
    windows = []
    for top in range(0, rows - size + 1, stride):
        for left in range(0, cols - size + 1, stride):
            windows.append([(top + dr) * cols + left + dc for dr in range(size) for dc in range(size)])
    return windows


def _explicit_harmonic(window_scores, windows, num_patches):
    out = []
    for patch in range(num_patches):
        covering = [float(window_scores[m]) for m, w in enumerate(windows) if patch in w]
        out.append(torch.tensor(len(covering) / sum(1 / s for s in covering)))
    return out


@pytest.mark.parametrize(
    ("grid", "size", "stride"), [((4, 4), 2, 1), ((15, 15), 3, 1), ((5, 7), 2, 1), ((5, 5), 3, 2), ((14, 14), 2, 1)]
)
def test_window_index_sets_match_explicit_construction(grid, size, stride):
    windows = winclip.window_index_sets(grid, size, stride)
    assert windows.dtype == torch.long
    assert windows.tolist() == _explicit_windows(*grid, size, stride)


def test_window_counts_of_the_official_grid():
    assert winclip.window_index_sets((15, 15), 2).shape == (196, 4)
    assert winclip.window_index_sets((15, 15), 3).shape == (169, 9)


def test_window_index_sets_reject_misfits(tiny_backbone):
    with pytest.raises(ValueError, match="distinct window sizes"):
        load_method("winclip", backbone=tiny_backbone, window_sizes=())
    with pytest.raises(ValueError, match="do not fit"):
        winclip.window_index_sets((2, 2), 3)
    with pytest.raises(ValueError, match="covered by no window"):
        winclip.coverage_matrix(winclip.window_index_sets((4, 4), 2, stride=3), 16)


@pytest.mark.parametrize(("grid", "size"), [((3, 3), 2), ((4, 5), 3), ((6, 6), 2)])
def test_harmonic_aggregation_matches_loop_over_patches(grid, size):
    windows = winclip.window_index_sets(grid, size)
    coverage = winclip.coverage_matrix(windows, grid[0] * grid[1])
    generator = torch.Generator().manual_seed(3)
    window_scores = torch.rand(2, windows.shape[0], generator=generator, dtype=torch.float64) * 0.98 + 0.01
    result = winclip.harmonic_aggregation(window_scores, coverage.double())
    for b in range(2):
        expected = torch.stack(_explicit_harmonic(window_scores[b], windows.tolist(), grid[0] * grid[1]))
        torch.testing.assert_close(result[b], expected.double())


def test_harmonic_aggregation_hand_made_grid():
    # 3x3 grid, four 2x2 windows with scores 1, 3/4, 1/2, 1/4 (row-major corners): the centre patch lies in
    # all four, so it gets 4 / (1 + 4/3 + 2 + 4) = 12/25; the top-middle lies in windows 0 and 1: 2/(1+4/3).
    windows = winclip.window_index_sets((3, 3), 2)
    coverage = winclip.coverage_matrix(windows, 9)
    result = winclip.harmonic_aggregation(torch.tensor([[1.0, 0.75, 0.5, 0.25]]), coverage)
    expected = torch.tensor([[1.0, 6 / 7, 0.75, 2 / 3, 12 / 25, 0.375, 0.5, 1 / 3, 0.25]])
    torch.testing.assert_close(result, expected)


def test_combine_scales_hand_made_example():
    image_scores = torch.tensor([0.5, 0.2])
    scale_2 = torch.tensor([[0.5, 0.25], [0.2, 1.0]])
    scale_3 = torch.tensor([[0.5, 1.0], [0.2, 0.1]])
    result = winclip.combine_scales(image_scores, [scale_2, scale_3])
    expected = torch.tensor([[0.5, 3 / (2 + 4 + 1)], [0.2, 3 / (5 + 1 + 10)]])
    torch.testing.assert_close(result, expected)


def test_abnormal_probability_is_tempered_softmax():
    text = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # normalised inside
    embeddings = torch.tensor([[[3.0, 0.0], [1.0, 1.0]]])
    result = winclip.abnormal_probability(embeddings, text, 0.07)
    expected = torch.tensor([[1 / (1 + np.exp(1 / 0.07)), 0.5]], dtype=torch.float32)
    torch.testing.assert_close(result, expected)


def test_tiny_scores_stay_finite():
    windows = winclip.window_index_sets((3, 3), 2)
    coverage = winclip.coverage_matrix(windows, 9)
    result = winclip.harmonic_aggregation(torch.tensor([[0.0, 0.5, 0.5, 0.5]]), coverage)
    assert torch.isfinite(result).all() and result[0, 0] < 1e-20


# -- a real-size architecture ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b16_random_weights_224():
    torch.manual_seed(0)
    backbone = build_backbone("ViT-B-16", image_size=224)
    # one template keeps the text side (242 sentences x 77 tokens by default, ~13 s on 2 CPU cores) out of a
    # test of the image side: 313 windows through a real-size ViT
    model = load_method("winclip", backbone=backbone, class_name="screw", templates=("a photo of a {}.",))
    assert model.coverage_2.shape == (196, 169) and model.coverage_3.shape == (196, 144)
    maps, scores = model.predict(torch.randn(1, 3, 224, 224))
    assert maps.shape == (1, 224, 224) and scores.shape == (1,)
    assert torch.isfinite(maps).all() and torch.isfinite(scores).all()
