"""The zsad CLI, run in-process on the tiny backbone and synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.cli.main import main
from zsad_core.preprocess import encode_png

TINY = ["--backbone", "zsad-tiny-vit", "--random-weights", "--image-size", "64"]


def test_version_and_help(capsys):
    assert main(["version"]) == 0
    assert "zsad-stream" in capsys.readouterr().out
    assert main([]) == 2
    assert "eval" in capsys.readouterr().err


def test_methods_lists_registered_methods(capsys):
    assert main(["methods"]) == 0
    assert "winclip" in capsys.readouterr().out


def test_eval_on_synthetic_writes_table_json_and_overlays(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["eval", "--method", "winclip", *TINY, "--dataset", "synthetic:classes=2,per_class=4,size=64",
                 "--out", str(out), "--save-overlays", str(tmp_path / "overlays"), "--overlays-per-kind", "1"])
    assert code == 0
    table = capsys.readouterr().out
    assert "pixel AUROC" in table and "mean" in table
    report = json.loads(out.read_text())
    assert set(report["per_class"]) == {"woven", "wood"}
    assert 0.0 <= report["mean"]["pixel_auroc"] <= 1.0
    assert {"image_auroc", "image_ap", "image_f1_max", "pixel_aupro", "pixel_ap", "pixel_f1_max"} <= set(report["mean"])
    overlays = list((tmp_path / "overlays").glob("*.png"))
    assert overlays and all(cv2.imread(str(p)).shape == (64, 64, 3) for p in overlays)


def test_infer_writes_maps_overlays_and_scores(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (48, 80, 3), dtype=np.uint8)
    path = tmp_path / "part.png"
    path.write_bytes(encode_png(image))
    assert main(["infer", str(path), "--method", "winclip", *TINY, "--out", str(tmp_path / "out")]) == 0
    scores = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert scores["results"][0]["image"] == str(path)
    anomaly_map = cv2.imread(str(tmp_path / "out" / "part_map.png"), cv2.IMREAD_UNCHANGED)
    assert anomaly_map.shape == (48, 80) and anomaly_map.dtype == np.uint16
    assert (tmp_path / "out" / "part_overlay.png").is_file()


def test_bad_image_fails_with_a_clear_message(tmp_path, capsys):
    path = tmp_path / "notes.png"
    path.write_text("not an image")
    assert main(["infer", str(path), "--method", "winclip", *TINY, "--out", str(tmp_path / "out")]) == 2
    assert "not_an_image" in capsys.readouterr().err


def test_unreachable_weights_fail_with_a_hint(tmp_path, capsys):
    assert main(["infer", str(tmp_path / "x.png"), "--method", "winclip", "--out", str(tmp_path)]) == 2
    assert "--backbone-weights" in capsys.readouterr().err


def test_train_local_writes_an_artifact_that_eval_loads(tmp_path, capsys):
    out = tmp_path / "prompts" / "v1"
    code = main(["train-local", "--method", "clip-ad+", *TINY, "--dataset", "synthetic:classes=1,per_class=4,size=64",
                 "--epochs", "1", "--batch-size", "2", "--max-steps", "2", "--seed", "5", "--out", str(out),
                 "--eval-dataset", "synthetic:seed=9,classes=1,per_class=2,size=64"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "clip-ad+" and manifest["training_data"].startswith("synthetic")
    assert manifest["history"][0]["steps"] == 2
    assert "pixel_auroc" in manifest["metrics"]
    assert main(["eval", "--method", "clip-ad+", *TINY, "--weights", str(out),
                 "--dataset", "synthetic:seed=9,classes=1,per_class=2,size=64"]) == 0
    assert main(["eval", "--method", "clip-ad+", "--backbone", "zsad-tiny-vit", "--random-weights",
                 "--image-size", "96", "--weights", str(out), "--dataset", "synthetic:classes=1,per_class=2"]) == 2
    assert "incompatible_weights" in capsys.readouterr().err


def test_eval_with_shots_averages_seeds_and_reports_the_same_metrics(tmp_path, capsys):
    dataset = ["--dataset", "synthetic:classes=1,per_class=4,size=64"]
    zero_shot, few_shot = tmp_path / "k0.json", tmp_path / "k2.json"
    assert main(["eval", "--method", "clip-ad", *TINY, *dataset, "--out", str(zero_shot)]) == 0
    assert main(["eval", "--method", "clip-ad", *TINY, *dataset, "--shots", "2", "--shot-seed", "0", "3",
                 "--out", str(few_shot)]) == 0
    assert "2 shots, averaged over seeds [0, 3]" in capsys.readouterr().out
    baseline, report = json.loads(zero_shot.read_text()), json.loads(few_shot.read_text())
    assert report["shots"] == 2 and set(report["per_seed"]) == {"0", "3"}
    assert set(report["mean"]) == set(baseline["mean"])
    per_seed = [report["per_seed"][seed]["pixel_auroc"] for seed in ("0", "3")]
    assert report["mean"]["pixel_auroc"] == pytest.approx(sum(per_seed) / 2)
    assert report["mean"]["pixel_auroc"] != baseline["mean"]["pixel_auroc"]
    assert main(["eval", "--method", "clip-ad", *TINY, *dataset, "--shots", "9"]) == 2
    assert "4 good reference images, 9 shots" in capsys.readouterr().err


def test_infer_a_folder_recursively_in_batches(tmp_path, capsys):
    rng = np.random.default_rng(3)
    for relative in ("a/part.png", "b/part.png", "b/deep/other.jpg", "b/notes.txt"):
        path = tmp_path / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)))
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "images"), "--method", "winclip", *TINY, "--batch-size", "2",
                 "--out", str(out), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert [Path(row["image"]).name for row in scores["results"]] == ["part.png", "other.jpg", "part.png"]
    assert {path.name for path in out.glob("*_map.png")} == {"a__part_map.png", "b__part_map.png",
                                                             "b__deep__other_map.png"}
