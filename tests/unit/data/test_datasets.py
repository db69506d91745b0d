"""MVTec, VisA and generic-folder loaders on tiny trees: counts, labels, classes, mask alignment, errors."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest

from zsad_core.data import DatasetError, FolderDataset, MVTecDataset, Sample, VisADataset
from zsad_core.errors import ZsadError


def red_region(image: np.ndarray) -> np.ndarray:
    return (image[..., 0] > 170) & (image[..., 1] < 90)


def check_aligned(sample: Sample) -> None:
    """The mask must sit exactly on the red rectangle painted into the image (none for good images)."""
    assert sample.mask is not None
    assert sample.mask.shape == sample.image.shape[:2]
    np.testing.assert_array_equal(sample.mask, red_region(sample.image))


# --------------------------------------------------------------------------------------------- MVTec


def test_mvtec_counts_labels_classes_and_alignment(mvtec_root, mvtec_layout):
    ds = MVTecDataset(str(mvtec_root(mvtec_layout)))
    assert ds.class_names == ("bottle", "cable")
    assert len(ds) == 10
    assert ds.labels.tolist() == [1, 1, 1, 0, 0, 0, 1, 1, 0, 0]  # defect folders in sorted order
    samples = list(ds)
    assert [s.class_name for s in samples] == ["bottle"] * 6 + ["cable"] * 4
    assert [s.defect_type for s in samples[:6]] == ["broken_large"] * 2 + ["contamination"] + ["good"] * 3
    for sample in samples:
        assert sample.image.dtype == np.uint8 and sample.image.shape == (24, 32, 3)
        assert sample.label == int(sample.defect_type != "good")
        assert sample.mask.any() == bool(sample.label)
        check_aligned(sample)
    assert samples[0].path.endswith(os.path.join("bottle", "test", "broken_large", "000.png"))
    assert ds.indices("cable").tolist() == [6, 7, 8, 9]


def test_mvtec_random_access_and_class_filter(mvtec_root, mvtec_layout):
    root = str(mvtec_root(mvtec_layout))
    ds = MVTecDataset(root, classes=["cable"])
    assert ds.class_names == ("cable",) and len(ds) == 4
    assert ds[-1].path == ds[3].path
    with pytest.raises(IndexError):
        ds[4]
    with pytest.raises(DatasetError, match="screw"):
        MVTecDataset(root, classes=["screw"])


def test_mvtec_ignores_folders_without_test_split(mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    (root / "license_texts").mkdir()
    (root / "readme.txt").write_text("not a class")
    assert MVTecDataset(str(root)).class_names == ("bottle", "cable")


def test_missing_mask_is_named_at_construction(mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    missing = root / "cable" / "ground_truth" / "cut" / "001_mask.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=r"cable.test.cut.001\.png") as info:
        MVTecDataset(str(root))
    assert "001_mask.png" in str(info.value)
    assert isinstance(info.value, ZsadError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("payload", [b"this is not a png", None], ids=["garbage", "truncated"])
def test_unreadable_image_is_named_when_decoded(mvtec_root, mvtec_layout, payload):
    root = mvtec_root(mvtec_layout)
    bad = root / "bottle" / "test" / "good" / "001.png"
    data = bad.read_bytes()
    bad.write_bytes(payload if payload is not None else data[: len(data) // 2])
    ds = MVTecDataset(str(root))  # listing is cheap and does not decode
    index = ds.paths.index(str(bad))
    with pytest.raises(DatasetError, match=r"001\.png"):
        ds[index]
    with pytest.raises(DatasetError, match=r"001\.png"):
        list(ds)


def test_empty_class_is_named(mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    (root / "screw" / "test" / "good").mkdir(parents=True)
    with pytest.raises(DatasetError, match="screw"):
        MVTecDataset(str(root))


def test_stray_files_are_refused_not_skipped(mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    (root / "bottle" / "test" / "good" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"notes\.txt"):
        MVTecDataset(str(root))
    (root / "bottle" / "test" / "good" / "notes.txt").unlink()
    (root / "bottle" / "test" / "loose.png").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"loose\.png"):
        MVTecDataset(str(root))


def test_mask_of_wrong_size_is_refused(mvtec_root, mvtec_layout):
    root = mvtec_root(mvtec_layout)
    mask_path = root / "bottle" / "ground_truth" / "contamination" / "000_mask.png"
    cv2.imwrite(str(mask_path), np.zeros((32, 24), np.uint8))
    ds = MVTecDataset(str(root))
    with pytest.raises(DatasetError, match=r"000_mask\.png"):
        ds[2]


def test_missing_root_or_no_classes(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        MVTecDataset(str(tmp_path / "nope"))
    with pytest.raises(DatasetError, match="no classes"):
        MVTecDataset(str(tmp_path))


# ---------------------------------------------------------------------------------------------- VisA


def test_visa_split_counts_labels_and_binarised_masks(visa_root):
    ds = VisADataset(str(visa_root))
    assert ds.class_names == ("candle", "pcb1")
    assert len(ds) == 9  # train rows are excluded
    assert ds.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 1]
    for sample in ds:
        assert sample.defect_type == ("anomaly" if sample.label else "good")
        # candle masks are stored 0/1, pcb1 masks 0/255: both must binarise. The images are JPEG, whose
        # chroma subsampling blurs the painted rectangle's edge, so alignment is checked by overlap.
        red = red_region(sample.image)
        assert sample.mask.shape == sample.image.shape[:2]
        assert sample.mask.sum() == (54 if sample.label else 0)
        if sample.label:
            rows, cols = np.nonzero(sample.mask)
            assert (np.ptp(rows) + 1) * (np.ptp(cols) + 1) == 54  # one solid 6 x 9 rectangle
            assert red[sample.mask].mean() > 0.75 and red[~sample.mask].mean() < 0.02
        else:
            assert not red.any()


def test_visa_class_filter_and_custom_csv(visa_root):
    ds = VisADataset(str(visa_root), classes="pcb1")
    assert ds.class_names == ("pcb1",) and len(ds) == 4
    custom = visa_root / "other.csv"
    custom.write_text("object,split,label,image,mask\npcb1,test,normal,pcb1/Data/Images/Normal/000.JPG,\n")
    assert len(VisADataset(str(visa_root), csv_path=str(custom))) == 1


def test_visa_errors_name_the_file(visa_root):
    csv_path = visa_root / "split_csv" / "1cls.csv"
    original = csv_path.read_text()
    missing = "candle/Data/Images/Anomaly/000.JPG"
    (visa_root / missing).unlink()
    with pytest.raises(DatasetError, match=r"Anomaly.000\.JPG"):
        VisADataset(str(visa_root))

    csv_path.write_text(original.replace(missing, "candle/Data/Images/Normal/000.JPG"))
    mask = "pcb1/Data/Masks/Anomaly/000.png"
    (visa_root / mask).unlink()
    with pytest.raises(DatasetError, match=r"Masks.Anomaly.000\.png"):
        VisADataset(str(visa_root))

    csv_path.write_text("object,split,label,image,mask\npcb1,test,broken,pcb1/Data/Images/Normal/000.JPG,\n")
    with pytest.raises(DatasetError, match="broken"):
        VisADataset(str(visa_root))
    csv_path.write_text("object,split,label,image\n")
    with pytest.raises(DatasetError, match="mask"):
        VisADataset(str(visa_root))
    with pytest.raises(DatasetError, match=r"1cls\.csv"):
        VisADataset(str(visa_root / "candle"))


def test_visa_anomaly_without_mask_and_empty_split(visa_root):
    csv_path = visa_root / "split_csv" / "1cls.csv"
    csv_path.write_text("object,split,label,image,mask\npcb1,test,anomaly,pcb1/Data/Images/Anomaly/000.JPG,\n")
    with pytest.raises(DatasetError, match=r"Anomaly.000\.JPG has no mask"):
        VisADataset(str(visa_root))
    with pytest.raises(DatasetError, match="no classes"):
        VisADataset(str(visa_root), split="val")


# -------------------------------------------------------------------------------------- generic folder


def test_folder_many_classes_with_plain_mask_names(tmp_path, class_tree):
    class_tree(tmp_path / "parts" / "gear", {"good": 2, "dent": 2}, mask_pattern="{stem}.png")
    class_tree(tmp_path / "parts" / "bolt", {"good": 1, "rust": 1})
    ds = FolderDataset(str(tmp_path / "parts"))
    assert ds.class_names == ("bolt", "gear") and len(ds) == 6
    assert ds.has_masks
    for sample in ds:
        check_aligned(sample)


def test_folder_single_class_root(tmp_path, class_tree):
    class_tree(tmp_path / "my_line", {"good": 2, "scratch": 1})
    ds = FolderDataset(str(tmp_path / "my_line"))
    assert ds.class_names == ("my_line",)
    assert ds.labels.tolist() == [0, 0, 1]


def test_folder_without_ground_truth_has_image_labels_only(tmp_path, class_tree):
    class_tree(tmp_path / "line", {"good": 1, "scratch": 2})
    for mask in (tmp_path / "line" / "ground_truth" / "scratch").iterdir():
        mask.unlink()
    (tmp_path / "line" / "ground_truth" / "scratch").rmdir()
    (tmp_path / "line" / "ground_truth").rmdir()
    ds = FolderDataset(str(tmp_path / "line"))
    assert not ds.has_masks
    assert [s.mask for s in ds] == [None, None, None]
    assert ds.labels.tolist() == [0, 1, 1]


def test_folder_with_some_masks_requires_all(tmp_path, class_tree):
    class_tree(tmp_path / "root" / "a", {"good": 1, "dent": 1})
    class_tree(tmp_path / "root" / "b", {"good": 1, "dent": 1})
    (tmp_path / "root" / "b" / "ground_truth" / "dent" / "000_mask.png").unlink()
    with pytest.raises(DatasetError, match=r"b.test.dent.000\.png"):
        FolderDataset(str(tmp_path / "root"))
