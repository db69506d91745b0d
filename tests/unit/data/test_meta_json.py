"""The official meta.json split format: reading the repositories' records, and writing then reading back."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from zsad_core.data import DatasetError, MetaJsonDataset, build_dataset, write_meta_json


def test_round_trip_keeps_every_entry(mvtec_root, mvtec_layout, tmp_path):
    root = mvtec_root(mvtec_layout)
    original = build_dataset(f"mvtec:{root}")
    path = write_meta_json(str(root / "meta.json"), {"test": original}, str(root), dataset_name="mvtec")
    document = json.loads((root / "meta.json").read_text())
    assert set(document) == {"train", "test"} and document["train"] == {}
    assert list(document["test"]) == ["bottle", "cable"]
    first = document["test"]["bottle"][0]
    assert set(first) == {"img_path", "mask_path", "cls_name", "specie_name", "anomaly", "dataset_name"}
    assert first["img_path"] == "bottle/test/broken_large/000.png"  # relative to the root
    back = MetaJsonDataset(str(root), meta_path=path)
    assert back.entries == original.entries
    for a, b in zip(original, back, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


def test_reads_official_records(tmp_path, mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    records = {
        "bottle": [
            {"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "bottle",
             "specie_name": "good", "anomaly": 0},
            {"img_path": "bottle/test/broken_large/000.png",
             "mask_path": "bottle/ground_truth/broken_large/000_mask.png", "cls_name": "bottle",
             "specie_name": "", "anomaly": 1},  # DAGM's generator leaves specie_name empty
        ]
    }
    (root / "meta.json").write_text(json.dumps({"train": {}, "test": records}))
    dataset = build_dataset(f"meta:{root}")
    assert dataset.labels.tolist() == [0, 1]
    assert [sample.defect_type for sample in dataset] == ["good", "anomaly"]
    assert dataset[1].mask.sum() == 6 * 9  # the box drawn by the fixture


def test_image_label_only_split(tmp_path, mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    record = {"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "brain", "specie_name": "yes",
              "anomaly": 1}
    (root / "meta.json").write_text(json.dumps({"test": {"brain": [record]}}))
    dataset = MetaJsonDataset(str(root))
    assert not dataset.has_masks and dataset[0].mask is None and dataset[0].defect_type == "yes"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "cannot read"),
        ({"train": {}}, "no 'test' split"),
        ({"test": {"a": [{"img_path": "x"}]}}, "missing fields"),
        ({"test": {"a": [{"img_path": "bottle/test/good/000.png", "mask_path": "", "cls_name": "a",
                          "specie_name": "good", "anomaly": 2}]}}, "anomaly must be 0 or 1"),
        ({"test": {"a": [{"img_path": "nope.png", "mask_path": "", "cls_name": "a", "specie_name": "good",
                          "anomaly": 0}]}}, "nope.png does not exist"),
    ],
)
def test_malformed_files_are_named(mvtec_root, mvtec_layout, document, message):
    root = mvtec_root(mvtec_layout)
    (root / "meta.json").write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(DatasetError, match=message):
        MetaJsonDataset(str(root))


def test_annotations_cannot_be_written(tmp_path):
    root = tmp_path / "gc10"
    (root / "1").mkdir(parents=True)
    assert cv2.imwrite(str(root / "1/a.jpg"), np.zeros((8, 8, 3), np.uint8))
    (root / "lable").mkdir()
    (root / "lable/a.xml").write_text("<annotation><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax>"
                                      "<ymax>2</ymax></bndbox></annotation>")
    with pytest.raises(DatasetError, match="only mask images"):
        write_meta_json(str(tmp_path / "meta.json"), {"test": build_dataset(f"gc10:{root}")}, str(root))
