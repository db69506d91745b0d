"""evaluate(): per-class rows, the NaN-skipping macro mean, options, and the report's table and JSON."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage

from zsad_core.metrics import (
    METRIC_KEYS,
    EvaluationReport,
    aupro,
    evaluate,
    image_ap,
    image_auroc,
    image_f1_max,
    pixel_ap,
    pixel_auroc,
    pixel_f1_max,
)

CLASSES = ["bottle", "cable", "carpet"]
PER_CLASS = 6


def dataset(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Three classes of six 16x16 images; "carpet" has no anomaly (its pixel and image metrics are NaN)."""
    rng = np.random.default_rng(seed)
    n = len(CLASSES) * PER_CLASS
    field = ndimage.gaussian_filter(rng.standard_normal((n, 16, 16)), sigma=(0, 1.5, 1.5))
    masks = field > 0.4 * field.std()
    masks[::2] = False
    masks[2 * PER_CLASS :] = False
    maps = (0.5 * masks + rng.random(masks.shape)).astype(np.float32)
    labels = masks.any(axis=(1, 2)).astype(int)
    scores = maps.max(axis=(1, 2))
    names = [name for name in CLASSES for _ in range(PER_CLASS)]
    return maps, masks, scores, labels, names


def test_rows_equal_the_single_metric_functions_and_mean_skips_nan() -> None:
    maps, masks, scores, labels, names = dataset()
    report = evaluate(maps, masks, scores, labels, names)
    assert list(report.per_class) == CLASSES
    assert all(list(row) == list(METRIC_KEYS) for row in report.per_class.values())
    for i, name in enumerate(CLASSES[:2]):
        part = slice(i * PER_CLASS, (i + 1) * PER_CLASS)
        row = report.per_class[name]
        assert row["pixel_auroc"] == pixel_auroc(maps[part], masks[part])
        assert row["pixel_aupro"] == aupro(maps[part], masks[part])
        assert row["pixel_ap"] == pixel_ap(maps[part], masks[part])
        assert row["pixel_f1_max"] == pixel_f1_max(maps[part], masks[part])
        assert row["image_auroc"] == image_auroc(scores[part], labels[part])
        assert row["image_ap"] == image_ap(scores[part], labels[part])
        assert row["image_f1_max"] == image_f1_max(scores[part], labels[part])
    assert all(math.isnan(value) for value in report.per_class["carpet"].values())
    for key in METRIC_KEYS:
        defined = [report.per_class[name][key] for name in CLASSES[:2]]
        assert report.mean[key] == pytest.approx(np.mean(defined))


def test_interleaved_classes_give_the_same_report() -> None:
    maps, masks, scores, labels, names = dataset(1)
    order = np.random.default_rng(0).permutation(len(names))
    shuffled = evaluate(maps[order], masks[order], scores[order], labels[order], [names[i] for i in order])
    contiguous = evaluate(maps, masks, scores, labels, names)
    for name in CLASSES:
        assert shuffled.per_class[name] == pytest.approx(contiguous.per_class[name], nan_ok=True)


def test_image_only_restricted_metrics_and_cflow() -> None:
    maps, masks, scores, labels, names = dataset()
    image_only = evaluate(None, None, scores, labels, names)
    assert list(image_only.mean) == ["image_auroc", "image_ap", "image_f1_max"]
    chosen = evaluate(maps, masks, scores, labels, names, metrics=["pixel_aupro", "image_auroc"])
    assert list(chosen.per_class["bottle"]) == ["pixel_aupro", "image_auroc"]
    cflow = evaluate(maps, masks, None, None, names, aupro_variant="cflow", metrics=["pixel_aupro"])
    assert cflow.per_class["cable"]["pixel_aupro"] == aupro(
        maps[PER_CLASS : 2 * PER_CLASS], masks[PER_CLASS : 2 * PER_CLASS], variant="cflow"
    )
    assert cflow.aupro_variant == "cflow"


def test_per_class_minmax_changes_nothing_but_rounding() -> None:
    maps, masks, scores, labels, names = dataset(2)
    before = maps.copy()
    plain = evaluate(maps, masks, scores, labels, names)
    normalised = evaluate(maps, masks, scores, labels, names, normalize="per_class_minmax")
    np.testing.assert_array_equal(maps, before)
    for key in METRIC_KEYS:
        assert normalised.mean[key] == pytest.approx(plain.mean[key], abs=1e-6)


def test_invalid_requests_are_refused() -> None:
    maps, masks, scores, labels, names = dataset()
    with pytest.raises(ValueError, match="need inputs"):
        evaluate(None, None, scores, labels, names, metrics=["pixel_auroc"])
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(maps, masks, scores, labels, names, metrics=["pro"])
    with pytest.raises(ValueError, match="class_names"):
        evaluate(maps, masks, scores, labels, names[:-1])
    with pytest.raises(ValueError, match="aupro_variant"):
        evaluate(maps, masks, scores, labels, names, aupro_variant="official")
    with pytest.raises(ValueError, match="nothing to evaluate"):
        evaluate(None, None, None, None, names)


def test_table_and_json() -> None:
    maps, masks, scores, labels, names = dataset()
    report = evaluate(maps, masks, scores, labels, names)
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["class", "pixel", "AUROC", "PRO"]
    for name in [*CLASSES, "mean"]:
        assert any(line.startswith(name) for line in lines)
    bottle = next(line for line in lines if line.startswith("bottle"))
    assert f"{100 * report.per_class['bottle']['pixel_auroc']:.1f}" in bottle.split()
    carpet = next(line for line in lines if line.startswith("carpet"))
    assert carpet.split()[1:] == ["-"] * len(METRIC_KEYS)
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert payload["per_class"]["carpet"]["pixel_auroc"] is None
    assert payload["mean"]["image_auroc"] == report.mean["image_auroc"]
    assert payload["aupro_variant"] == "exact"


def test_report_is_frozen() -> None:
    report = EvaluationReport(per_class={}, mean={})
    with pytest.raises(AttributeError):
        report.mean = {}  # type: ignore[misc]
