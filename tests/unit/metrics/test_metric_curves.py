"""AUROC, AP and F1-max against scikit-learn (ties included), closed forms and input handling."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from zsad_core.metrics import (
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
    rank_binary,
)


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * precision * recall / (precision + recall)
    return float(np.max(f1[np.isfinite(f1)]))


def random_pixels(seed: int, decimals: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = rng.random((6, 24, 24)) < 0.15
    maps = rng.random(masks.shape) + 0.4 * masks
    if decimals is not None:
        maps = np.round(maps, decimals)
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("decimals", [1, 2, None])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_metrics_match_sklearn_with_ties(seed: int, decimals: int | None) -> None:
    maps, masks = random_pixels(seed, decimals)
    y, s = masks.ravel(), maps.ravel()
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    assert pixel_ap(maps, masks) == pytest.approx(average_precision_score(y, s), abs=1e-6)
    assert pixel_f1_max(maps, masks) == pytest.approx(sklearn_f1_max(y, s), abs=1e-6)


@pytest.mark.parametrize("decimals", [1, None])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_image_metrics_match_sklearn_with_ties(seed: int, decimals: int | None) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 60)
    scores = rng.random(60) + 0.3 * labels
    if decimals is not None:
        scores = np.round(scores, decimals)
    assert image_auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert image_ap(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert image_f1_max(scores, labels) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=40).filter(
        lambda pairs: len({label for _, label in pairs}) == 2
    )
)
def test_auroc_ap_match_sklearn_on_heavily_tied_scores(pairs: list[tuple[int, bool]]) -> None:
    scores = np.array([score for score, _ in pairs], dtype=np.float64)
    labels = np.array([label for _, label in pairs])
    auroc = image_auroc(scores, labels)
    assert auroc == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert image_auroc(-scores, labels) == pytest.approx(1 - auroc, abs=1e-9)
    assert image_ap(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-9)


def test_ranking_counts_match_brute_force() -> None:
    rng = np.random.default_rng(5)
    scores = np.round(rng.random(200), 1)
    labels = rng.random(200) < 0.3
    ranking = rank_binary(scores, labels)
    expected_levels = np.unique(scores[labels])[::-1]
    np.testing.assert_array_equal(ranking.levels, expected_levels)
    neg, pos = scores[~labels], scores[labels]
    np.testing.assert_array_equal(ranking.tp, [(pos >= v).sum() for v in expected_levels])
    np.testing.assert_array_equal(ranking.fp_ge, [(neg >= v).sum() for v in expected_levels])
    np.testing.assert_array_equal(ranking.fp_gt, [(neg > v).sum() for v in expected_levels])


def test_perfect_inverted_and_constant_maps() -> None:
    _, masks = random_pixels(0, None)
    perfect = masks.astype(np.float32)
    assert pixel_auroc(perfect, masks) == 1.0
    assert pixel_ap(perfect, masks) == 1.0
    assert pixel_f1_max(perfect, masks) == 1.0
    assert pixel_auroc(1 - perfect, masks) == 0.0
    constant = np.full(masks.shape, 0.3, dtype=np.float32)
    assert pixel_auroc(constant, masks) == 0.5
    # A constant map predicts every pixel anomalous: precision = prevalence, recall 1.
    prevalence = masks.mean()
    assert pixel_ap(constant, masks) == pytest.approx(prevalence)
    assert pixel_f1_max(constant, masks) == pytest.approx(2 * prevalence / (1 + prevalence))


def test_undefined_cases_are_nan() -> None:
    maps = np.random.default_rng(0).random((2, 4, 4))
    no_anomaly = np.zeros(maps.shape, dtype=bool)
    assert np.isnan(pixel_auroc(maps, no_anomaly))
    assert np.isnan(pixel_ap(maps, no_anomaly))
    assert np.isnan(pixel_f1_max(maps, no_anomaly))
    all_anomalous = np.ones(maps.shape, dtype=bool)
    assert np.isnan(pixel_auroc(maps, all_anomalous))
    assert pixel_ap(maps, all_anomalous) == 1.0
    assert np.isnan(image_auroc([0.1, 0.2], [1, 1]))


def test_torch_tensors_are_accepted() -> None:
    maps, masks = random_pixels(3, 2)
    expected = pixel_auroc(maps, masks)
    assert pixel_auroc(torch.from_numpy(maps), torch.from_numpy(masks)) == expected
    assert pixel_auroc(torch.from_numpy(maps).half(), torch.from_numpy(masks).int()) == pytest.approx(
        expected, abs=1e-3
    )
    assert pixel_auroc(torch.from_numpy(maps).bfloat16(), torch.from_numpy(masks)) == pytest.approx(expected, abs=1e-2)
    scores, labels = torch.tensor([0.1, 0.9, 0.4]), torch.tensor([0, 1, 0])
    assert image_auroc(scores, labels) == 1.0


def test_bad_inputs_are_refused() -> None:
    maps = np.zeros((2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="0 and 1"):
        pixel_auroc(maps, np.full(maps.shape, 0.5))
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(maps, np.zeros((2, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="3 dimensions"):
        pixel_auroc(maps[0], np.zeros((4, 4), dtype=bool))
    masks = np.zeros(maps.shape, dtype=bool)
    masks[0, 0, 0] = True
    for bad in (np.nan, np.inf):
        maps[1, 2, 2] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            pixel_auroc(maps, masks)
