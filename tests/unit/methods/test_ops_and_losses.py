"""Shared scoring ops and losses against scipy and hand-written formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, uniform_filter

from zsad_core.methods import losses, ops


@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0, 8.0])
def test_gaussian_blur_equals_scipy_reflect(sigma):
    maps = torch.rand(2, 40, 33, dtype=torch.float64)
    ours = ops.gaussian_blur(maps, sigma).numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], gaussian_filter(maps[i].numpy(), sigma=sigma, mode="reflect"), atol=1e-10)


def test_gaussian_blur_zero_sigma_is_identity():
    maps = torch.rand(1, 8, 8)
    assert ops.gaussian_blur(maps, 0) is maps


def test_mean_filter_equals_scipy_nearest():
    maps = torch.rand(2, 1, 7, 9, dtype=torch.float64)
    ours = ops.mean_filter3x3(maps)[:, 0].numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], uniform_filter(maps[i, 0].numpy(), size=3, mode="nearest"), atol=1e-12)


def test_harmonic_mean_and_weighted_form():
    values = torch.tensor([[1.0, 2.0, 4.0]])
    assert ops.harmonic_mean(values, dim=1).item() == pytest.approx(3 / (1 + 0.5 + 0.25))
    weights = torch.tensor([[1.0, 0.0, 1.0]])
    assert ops.harmonic_mean(values, dim=1, weights=weights).item() == pytest.approx(2 / (1 + 0.25))


def test_topk_mean_clips_k():
    values = torch.tensor([[1.0, 5.0, 3.0]])
    assert ops.topk_mean(values, 2).item() == 4.0
    assert ops.topk_mean(values, 10).item() == 3.0


def test_quarter_taps():
    assert ops.quarter_taps(24) == (6, 12, 18, 24)
    assert ops.quarter_taps(12) == (3, 6, 9, 12)
    assert ops.quarter_taps(4) == (1, 2, 3, 4)


def test_cosine_logits_shared_and_per_image_text():
    features = torch.randn(2, 5, 8)
    text = torch.randn(3, 8)
    shared = ops.cosine_logits(features, text, scale=10.0)
    per_image = ops.cosine_logits(features, text.expand(2, 3, 8), scale=10.0)
    expected = 10.0 * torch.nn.functional.cosine_similarity(features[:, :, None], text[None, None], dim=-1)
    torch.testing.assert_close(shared, expected)
    torch.testing.assert_close(per_image, expected)


def test_tokens_to_grid_is_row_major():
    tokens = torch.arange(6.0).reshape(1, 6, 1)
    grid = ops.tokens_to_grid(tokens, (2, 3))
    assert grid[0, 0].tolist() == [[0, 1, 2], [3, 4, 5]]
    with pytest.raises(ValueError):
        ops.tokens_to_grid(tokens, (2, 2))


def test_focal_loss_matches_formula():
    probs = torch.softmax(torch.randn(2, 2, 4, 4), dim=1)
    target = (torch.rand(2, 4, 4) > 0.5).long()
    smooth = 1e-5
    one_hot = torch.stack([1 - target, target], dim=1).float().clamp(smooth, 1 - smooth)
    p_t = (one_hot * probs).sum(1) + smooth
    expected = (-(1 - p_t) ** 2 * torch.log(p_t)).mean()
    torch.testing.assert_close(losses.focal_loss(probs, target), expected)


def test_dice_loss_perfect_and_disjoint():
    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1
    assert losses.dice_loss(target.clone(), target).item() == pytest.approx(0.0)
    disjoint = 1 - target
    assert losses.dice_loss(disjoint, target).item() == pytest.approx(1 - 1 / (8 + 8 + 1))
