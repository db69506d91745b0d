"""``zsad reproduce`` end to end on synthetic dataset folders (tiny random-weight CLIP)."""

from __future__ import annotations

import json

import cv2
import pytest

from services.cli.main import main
from zsad_core.data import build_dataset
from zsad_core.reproduce import (
    NO_NUMBER,
    ReproduceError,
    ReproductionReport,
    auxiliary_for,
    paper_numbers,
    reproduce,
)
from zsad_core.training import TrainingOptions

TINY = ["--backbone", "zsad-tiny-vit", "--random-weights", "--image-size", "64"]


@pytest.fixture
def data_root(tmp_path):
    """Two dataset folders of normal images (``synthetic:PATH`` adds the defects) and one unknown folder."""
    root = tmp_path / "data"
    for seed, name in ((1, "synthetic_a"), (2, "synthetic_b")):
        normals = build_dataset(f"synthetic:seed={seed},classes=1,per_class=4,size=64,anomaly_ratio=0")
        (root / name).mkdir(parents=True)
        for index, sample in enumerate(normals):
            cv2.imwrite(str(root / name / f"{index}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    (root / "notes").mkdir()
    return root


def test_training_free_method_prints_measured_next_to_paper(data_root, tmp_path, capsys):
    report_path = tmp_path / "report.json"
    code = main(["reproduce", "--method", "winclip", *TINY, "--data-root", str(data_root), "--out", str(report_path)])
    assert code == 0
    table = capsys.readouterr().out
    assert "winclip: measured vs paper" in table
    assert table.count(NO_NUMBER) == 2 * 7  # two datasets x seven metrics, none cited for synthetic data
    assert "skipped notes" in table
    report = json.loads(report_path.read_text())
    assert {row["dataset"] for row in report["rows"]} == {"synthetic_a", "synthetic_b"}
    assert all(row["paper"] is None and row["delta"] is None for row in report["rows"])
    assert all(row["measured"] is None or 0.0 <= row["measured"] <= 100.0 for row in report["rows"])


def test_learnable_method_trains_on_the_other_dataset(data_root, tiny_backbone):
    report = reproduce("clip-ad+", data_root, load_options={"backbone": tiny_backbone, "rep_vec": "mean"},
                       datasets=["synthetic_a", "synthetic_b"],
                       training=TrainingOptions(max_steps=1, batch_size=2))
    assert report.trained_on == {"synthetic_a": "synthetic_b", "synthetic_b": "synthetic_a"}
    assert len(report.rows()) == 2 * 7


def test_paper_numbers_are_cited_and_differences_are_points():
    cited = paper_numbers("winclip")
    assert cited["mvtec"]["metrics"]["image_auroc"] == 91.8 and "CVPR 2023" in cited["mvtec"]["citation"]
    report = ReproductionReport("winclip", measured={"mvtec": {"image_auroc": 90.0, "pixel_ap": 20.0}},
                                paper={"mvtec": {"image_auroc": 91.8}})
    rows = {row["metric"]: row for row in report.rows()}
    assert rows["image_auroc"]["delta"] == -1.8 and rows["pixel_ap"]["paper"] is None
    assert "-1.8" in report.format_table() and NO_NUMBER in report.format_table()


def test_papers_auxiliary_pairing():
    assert auxiliary_for("visa", ["mvtec", "visa", "btad"]) == "mvtec"
    assert auxiliary_for("mvtec", ["mvtec", "visa"]) == "visa"
    assert auxiliary_for("btad", ["btad", "mvtec"]) == "mvtec"
    assert auxiliary_for("mvtec", ["mvtec"]) is None


def test_missing_data_and_missing_auxiliary_are_named(tmp_path, data_root, capsys):
    with pytest.raises(ReproduceError, match="is not a folder"):
        reproduce("winclip", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert main(["reproduce", "--method", "winclip", *TINY, "--data-root", str(tmp_path / "empty")]) == 2
    assert "no dataset found" in capsys.readouterr().err
    with pytest.raises(ReproduceError, match="synthetic_a: needs an auxiliary dataset to train on"):
        reproduce("clip-ad+", data_root, datasets=["synthetic_a"], load_options={"backbone": "zsad-tiny-vit",
                                                                                   "pretrained": False})
    with pytest.raises(ReproduceError, match="mvtec: no folder"):
        reproduce("winclip", data_root, datasets=["mvtec"])
