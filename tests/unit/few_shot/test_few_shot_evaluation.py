"""The few-shot evaluation protocol: reference draws from the train split, per-seed runs, averaged reports."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zsad_core import load_method
from zsad_core.data import DatasetError, build_dataset, to_protocol
from zsad_core.evaluation import average_reports, draw_references, evaluate_few_shot
from zsad_core.few_shot import with_references
from zsad_core.metrics import EvaluationReport

SPEC = "synthetic:seed=2,classes=wood+disc,per_class=4,size=64"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_references_are_good_images_of_the_class_drawn_by_seed():
    dataset = build_dataset(SPEC.replace("per_class=4", "per_class=6"))  # test split: 3 good, 3 anomalous per class
    picks = draw_references(dataset, "disc", 2, seed=0)
    assert len(set(picks.tolist())) == 2
    assert all(dataset.labels[i] == 0 and dataset.sample_classes[i] == "disc" for i in picks)
    assert draw_references(dataset, "disc", 2, seed=0).tolist() == picks.tolist()
    draws = {tuple(draw_references(dataset, "disc", 2, seed=seed)) for seed in range(8)}
    assert len(draws) > 1
    with pytest.raises(DatasetError, match="3 good reference images, 4 shots"):
        draw_references(dataset, "disc", 4, seed=0)


def test_average_reports_is_the_mean_over_seeds_ignoring_nan():
    first = EvaluationReport({"a": {"pixel_auroc": 0.6, "image_auroc": math.nan}},
                             {"pixel_auroc": 0.6, "image_auroc": math.nan})
    second = EvaluationReport({"a": {"pixel_auroc": 0.8, "image_auroc": 0.5}}, {"pixel_auroc": 0.8, "image_auroc": 0.5})
    averaged = average_reports([first, second])
    assert averaged.per_class["a"]["pixel_auroc"] == pytest.approx(0.7)
    assert averaged.mean["image_auroc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same classes"):
        average_reports([first, EvaluationReport({"b": {"pixel_auroc": 0.5}}, {"pixel_auroc": 0.5})])


def test_each_seed_scores_with_references_drawn_from_the_train_split(tiny_backbone):
    method = load_method("clip-ad", backbone=tiny_backbone)
    dataset, train = build_dataset(SPEC), build_dataset(SPEC, split="train")
    report, runs = evaluate_few_shot(method, dataset, train, 2, [0, 5], batch_size=3)
    assert len(runs) == 2 and set(report.per_class) == {"wood", "disc"}
    expected_mean = (runs[0].report.mean["pixel_auroc"] + runs[1].report.mean["pixel_auroc"]) / 2
    assert report.mean["pixel_auroc"] == pytest.approx(expected_mean)

    # Seed 5 for "disc", rebuilt by hand: the drawn train images as references, the test images scored.
    references = [to_protocol(train[int(i)], 64).model_image for i in draw_references(train, "disc", 2, seed=5)]
    by_hand = with_references(method.setup("disc"), references)
    test_indices = dataset.indices("disc")
    expected = by_hand.predict([to_protocol(dataset[int(i)], 64).model_image for i in test_indices]).scores
    in_run = np.isin(runs[1].indices, test_indices)
    np.testing.assert_allclose(runs[1].scores[in_run], expected.numpy(), rtol=1e-5, atol=1e-6)
