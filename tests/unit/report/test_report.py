"""The evaluation report: curves that integrate to the reported metrics, PNGs of the expected size, an HTML
page that references every file it needs, and DataLoader workers that change nothing but speed."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from zsad_core import load_method
from zsad_core.data import build_dataset
from zsad_core.evaluation import evaluate_method
from zsad_core.metrics import aupro
from zsad_core.metrics.class_curves import MAX_CURVE_POINTS, class_curves
from zsad_core.report import PANEL_SIDE, PLOT_SIZE, write_report
from zsad_core.training import TrainingOptions, train_method


def _area_to(curve, x_max: float) -> float:
    keep = curve.x <= x_max
    x, y = curve.x[keep], curve.y[keep]
    if x[-1] < x_max:  # close the polyline at x_max by linear interpolation
        after = np.argmax(curve.x > x_max)
        x0, x1, y0, y1 = curve.x[after - 1], curve.x[after], curve.y[after - 1], curve.y[after]
        x, y = np.append(x, x_max), np.append(y, y0 + (y1 - y0) * (x_max - x0) / (x1 - x0))
    return float(np.trapezoid(y, x))


def test_curve_areas_equal_independent_metrics():
    rng = np.random.default_rng(3)
    masks = np.zeros((4, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[2, 9:12, 1:4] = True
    masks[2, 0:2, 14:16] = True
    maps = np.round(rng.random((4, 16, 16)) + 0.4 * masks, 1).astype(np.float32)  # rounding makes ties
    scores = np.array([0.9, 0.2, 0.9, 0.4, 0.1, 0.7])
    labels = np.array([1, 0, 1, 0, 0, 1])
    curves = class_curves(maps, masks, scores, labels)
    assert np.trapezoid(curves.pixel_roc.y, curves.pixel_roc.x) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    recall, precision = curves.pixel_pr.x, curves.pixel_pr.y
    assert np.sum(np.diff(recall, prepend=0.0) * precision) == pytest.approx(
        average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert _area_to(curves.pixel_pro, 0.3) / 0.3 == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert np.trapezoid(curves.image_roc.y, curves.image_roc.x) == pytest.approx(roc_auc_score(labels, scores))
    assert sorted(curves.normal_scores) == [0.1, 0.2, 0.4] and sorted(curves.anomalous_scores) == [0.7, 0.9, 0.9]
    only_anomalous = class_curves(None, None, np.array([0.3, 0.5]), np.array([1, 1]))
    assert only_anomalous.pixel_roc is None and only_anomalous.image_roc is None


def test_long_curves_are_thinned_but_keep_their_ends():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 128, 128)).astype(np.float32)
    masks = rng.random((2, 128, 128)) < 0.3
    curve = class_curves(maps, masks, np.array([0.1, 0.2]), np.array([0, 1])).pixel_roc
    assert curve.x.size <= MAX_CURVE_POINTS
    assert (curve.x[0], curve.y[0], curve.x[-1], curve.y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.trapezoid(curve.y, curve.x) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=2e-3)


@pytest.fixture(scope="module")
def tiny_method():
    return load_method("winclip", backbone="zsad-tiny-vit", pretrained=False, image_size=64).eval()


def test_report_files_sizes_links_and_areas(tmp_path, tiny_method):
    dataset = build_dataset("synthetic:classes=2,per_class=4,size=64")
    run = evaluate_method(tiny_method, dataset, batch_size=3, curves=True)
    page = write_report(tmp_path / "report", run, title="winclip on synthetic", method=tiny_method,
                        dataset=dataset, per_kind=1)
    text = page.read_text()
    referenced = re.findall(r'src="([^"]+)"', text)
    written = sorted(path.name for path in page.parent.glob("*.png"))
    assert sorted(referenced) == written  # every file the page needs exists, and nothing is orphaned
    per_class = [name for name in written if name[:2].isdigit()]
    assert len(per_class) == 2 * 4  # roc, pr, pro, histogram for each class
    for name in written:
        image = cv2.imread(str(page.parent / name))
        expected = (PLOT_SIZE[1], PLOT_SIZE[0]) if name in per_class else (PANEL_SIDE + 24, 3 * PANEL_SIDE + 8)
        assert image.shape[:2] == expected, name
    assert len([name for name in written if name.startswith(("best", "worst"))]) == 4
    for class_name, row in run.report.per_class.items():
        curves = run.curves[class_name]
        assert np.trapezoid(curves.pixel_roc.y, curves.pixel_roc.x) == pytest.approx(row["pixel_auroc"], abs=1e-9)
        assert np.trapezoid(curves.image_roc.y, curves.image_roc.x) == pytest.approx(row["image_auroc"], abs=1e-9)
        assert _area_to(curves.pixel_pro, 0.3) / 0.3 == pytest.approx(row["pixel_aupro"], abs=1e-9)
        assert f"{100 * row['pixel_auroc']:.1f}" in text and class_name in text


def test_report_needs_curves(tmp_path, tiny_method):
    run = evaluate_method(tiny_method, build_dataset("synthetic:classes=1,per_class=2,size=64"))
    with pytest.raises(ValueError, match="curves=True"):
        write_report(tmp_path, run, title="x")


def test_workers_change_nothing_but_speed(tiny_method):
    dataset = build_dataset("synthetic:classes=1,per_class=5,size=64")
    inline = evaluate_method(tiny_method, dataset, batch_size=2, num_workers=0)
    workers = evaluate_method(tiny_method, dataset, batch_size=2, num_workers=1)
    assert np.array_equal(inline.scores, workers.scores) and np.array_equal(inline.indices, workers.indices)
    assert inline.report.to_dict() == workers.report.to_dict()


def test_training_loader_workers_keep_runs_reproducible():
    data = build_dataset("synthetic:classes=1,per_class=4,size=64")
    losses, images = [], []
    for workers in (0, 1):
        torch.manual_seed(0)  # the random backbone is drawn from the global generator
        method = load_method("clip-ad+", backbone="zsad-tiny-vit", pretrained=False, image_size=64)
        seen: list[int] = []
        options = TrainingOptions(epochs=1, batch_size=2, seed=1, max_steps=2, num_workers=workers)
        losses.append(train_method(method, data, options, progress=seen.append)[0]["loss"])
        images.append(seen)
    assert losses[0] == losses[1] and images == [[2, 2], [2, 2]]


def test_loader_leaves_the_global_generator_alone():
    from zsad_core.data.loading import protocol_loader

    dataset = build_dataset("synthetic:classes=1,per_class=2,size=32")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    batches = list(protocol_loader(dataset, [1, 0], 32, batch_size=1, num_workers=0))
    assert torch.equal(torch.rand(3), expected)
    assert [batch[0].path for batch in batches] == [dataset[1].path, dataset[0].path]


def test_dataset_spec_joins_name_and_root(tmp_path):
    from services.cli.cmd_inference import dataset_spec
    from zsad_core.data import DatasetError

    assert dataset_spec("btad", str(tmp_path)) == f"btad:{tmp_path}"
    assert dataset_spec("mvtec:/x", None) == "mvtec:/x"
    with pytest.raises(DatasetError, match="already names"):
        dataset_spec("mvtec:/x", str(Path("/y")))
