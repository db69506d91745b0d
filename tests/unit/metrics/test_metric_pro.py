"""AUPRO (exact and cflow) against brute-force per-threshold, per-region references, and closed forms."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import auc

from zsad_core.metrics import aupro

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def reference_pro_and_fpr(masks: np.ndarray, binary: np.ndarray) -> tuple[float, float]:
    """PRO and FPR of one binarised set of maps, region by region, as the papers' loop computes them."""
    overlaps = []
    for mask, predicted in zip(masks, binary, strict=True):
        regions, n_regions = ndimage.label(mask, structure=EIGHT_CONNECTED)
        for region_id in range(1, n_regions + 1):
            region = regions == region_id
            overlaps.append(predicted[region].sum() / region.sum())
    normal = ~masks
    return float(np.mean(overlaps)), float((binary & normal).sum() / normal.sum())


def reference_exact(maps: np.ndarray, masks: np.ndarray, fpr_limit: float) -> float:
    """Every distinct score as a threshold (>=), curve from (0,0) to (1,1), trapezoid cut at fpr_limit."""
    fprs, pros = [0.0], [0.0]
    for threshold in np.unique(maps)[::-1]:
        pro, fpr = reference_pro_and_fpr(masks, maps >= threshold)
        pros.append(pro)
        fprs.append(fpr)
    fprs.append(1.0)
    pros.append(1.0)
    area = 0.0
    for i in range(1, len(fprs)):
        x0, x1, y0, y1 = fprs[i - 1], fprs[i], pros[i - 1], pros[i]
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            y1 = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x1 = fpr_limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


def reference_cflow(maps: np.ndarray, masks: np.ndarray, fpr_limit: float, num_thresholds: int) -> float:
    """cflow-ad's cal_pro_score loop, with the degenerate cases defined as zsad_core documents them."""
    lo, hi = maps.min(), maps.max()
    thresholds = [lo] if lo == hi else np.arange(lo, hi, (hi - lo) / num_thresholds).astype(maps.dtype)
    pros, fprs = [], []
    for threshold in thresholds:
        pro, fpr = reference_pro_and_fpr(masks, maps > threshold)
        pros.append(pro)
        fprs.append(fpr)
    pros, fprs = np.array(pros), np.array(fprs)
    keep = fprs < fpr_limit
    if not keep.any():
        return 0.0
    pros, fprs = pros[keep], fprs[keep]
    if fprs.max() == fprs.min():
        return float(pros.mean())
    return float(auc((fprs - fprs.min()) / (fprs.max() - fprs.min()), pros))


def blob_case(seed: int, decimals: int | None, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Several images with several smooth regions each (one image without any), maps correlated with them."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.standard_normal((5, 20, 20)), sigma=(0, 1.5, 1.5))
    masks = field > 0.35 * field.std()
    masks[0] = False
    maps = 0.6 * masks + rng.random(masks.shape)
    if decimals is not None:
        maps = np.round(maps, decimals)
    return maps.astype(dtype), masks


@pytest.mark.parametrize(("decimals", "dtype"), [(1, np.float32), (2, np.float64), (None, np.float32)])
@pytest.mark.parametrize("seed", [0, 1])
def test_exact_matches_brute_force(seed: int, decimals: int | None, dtype: type) -> None:
    maps, masks = blob_case(seed, decimals, dtype)
    assert ndimage.label(masks[1], structure=EIGHT_CONNECTED)[1] >= 1
    for fpr_limit in (0.05, 0.3, 1.0):
        expected = reference_exact(maps, masks, fpr_limit)
        assert aupro(maps, masks, fpr_limit=fpr_limit) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(("decimals", "dtype"), [(1, np.float32), (2, np.float64), (None, np.float32)])
@pytest.mark.parametrize("seed", [0, 1])
def test_cflow_matches_brute_force(seed: int, decimals: int | None, dtype: type) -> None:
    maps, masks = blob_case(seed, decimals, dtype)
    for fpr_limit, steps in ((0.3, 200), (0.5, 37)):
        expected = reference_cflow(maps, masks, fpr_limit, steps)
        actual = aupro(maps, masks, fpr_limit=fpr_limit, variant="cflow", num_thresholds=steps)
        assert actual == pytest.approx(expected, abs=1e-6)


def test_hand_computed_case() -> None:
    # Region A = two pixels scoring 0.9 and 0.5, region B = one pixel at 0.7, five normal pixels, one at 0.8.
    masks = np.array([[[1, 1, 0, 0], [0, 0, 0, 1]]], dtype=bool)
    maps = np.array([[[0.9, 0.5, 0.8, 0.1], [0.2, 0.3, 0.4, 0.7]]])
    # Exact curve: (0,0) -> (0,.25) [A half found] -> (.2,.25) [0.8 normal] -> (.2,.75) [B] -> (.2,1) [A].
    # Area up to 0.3 = .2 * .25 + .1 * 1 = .15, divided by .3.
    assert aupro(maps, masks) == pytest.approx(0.5)
    # cflow keeps FPR 0.2 (thresholds in [0.4, 0.8)) and 0 (>= 0.8); rescaled to 1 and 0. The PRO is 0.25 at
    # both ends of the only sloped step (just below and at 0.8), so the area is 0.25.
    assert aupro(maps, masks, variant="cflow") == pytest.approx(0.25)


def test_regions_are_eight_connected() -> None:
    # (0,0) touches (1,1) only diagonally: one region of area 3 (two regions of 1 and 2 if 4-connected).
    masks = np.array([[[1, 0, 0], [0, 1, 1], [0, 0, 0]]], dtype=bool)
    maps = np.array([[[0.9, 0.1, 0.1], [0.1, 0.5, 0.5], [0.6, 0.1, 0.1]]])
    # Curve (0,0) -> (0,1/3) -> (1/6,1/3) -> (1/6,1) -> (1,1).
    expected = (1 / 6 * 1 / 3 + (0.3 - 1 / 6) * 1) / 0.3
    assert aupro(maps, masks) == pytest.approx(expected)


def test_perfect_maps_score_one() -> None:
    _, masks = blob_case(0, None, np.float32)
    binary = masks.astype(np.float32)
    graded = np.where(masks, 0.6 + 0.4 * binary, 0.4 * np.random.default_rng(0).random(masks.shape))
    for maps in (binary, graded):
        assert aupro(maps, masks) == 1.0
        assert aupro(maps, masks, variant="cflow") == 1.0


def test_constant_map_and_no_anomaly() -> None:
    _, masks = blob_case(1, None, np.float32)
    constant = np.full(masks.shape, 0.7, dtype=np.float32)
    assert aupro(constant, masks) == pytest.approx(0.15)
    assert aupro(constant, masks, variant="cflow") == 0.0
    maps = np.random.default_rng(0).random(masks.shape)
    no_anomaly = np.zeros_like(masks)
    assert np.isnan(aupro(maps, no_anomaly))
    assert np.isnan(aupro(maps, no_anomaly, variant="cflow"))


def test_torch_input_and_bad_options() -> None:
    maps, masks = blob_case(0, 2, np.float32)
    assert aupro(torch.from_numpy(maps), torch.from_numpy(masks)) == aupro(maps, masks)
    with pytest.raises(ValueError, match="variant"):
        aupro(maps, masks, variant="skimage")
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=0.0)
