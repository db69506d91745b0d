"""Every benchmark adapter on a tiny tree written in that dataset's native layout.

Each anomalous image carries a red box exactly where its ground truth is set (see conftest), so the checks
"the mask lies on the red pixels" prove pairing and orientation; counts and labels are written by hand.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import savemat

from tests.unit.data.conftest import (
    HEIGHT,
    WIDTH,
    defect_box,
    defect_image_and_mask,
    normal_image,
    red_region,
    write_rgb,
)
from zsad_core.data import DatasetError, build_dataset

_counter = iter(range(10_000))


def _defect(path: Path, mask_path: Path | None = None, mask_value: int = 255) -> np.ndarray:
    """Write a defective image (and its mask image when a path is given); return the mask."""
    index = next(_counter)
    image, mask = defect_image_and_mask(index, index, mask_value)
    write_rgb(path, image)
    if mask_path is not None:
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(mask_path), mask)
    return mask


def _normal(path: Path) -> None:
    write_rgb(path, normal_image(next(_counter)))


def _empty_mask(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.zeros((HEIGHT, WIDTH), np.uint8))


def _check(dataset, classes: tuple[str, ...], labels: list[int], has_masks: bool = True) -> None:
    assert dataset.class_names == classes
    assert dataset.labels.tolist() == labels
    for sample in dataset:
        assert sample.label == int(sample.defect_type != "good")
        if not has_masks:
            assert sample.mask is None
            continue
        assert sample.mask is not None
        if sample.label:
            assert sample.mask.any()
            assert np.array_equal(sample.mask, red_region(sample.image)), sample.path
        else:
            assert not sample.mask.any()


def test_btad_ok_ko_with_bmp_and_png(tmp_path):
    root = tmp_path / "btad"
    _normal(root / "01/test/ok/0000.bmp")
    _defect(root / "01/test/ko/0001.bmp", root / "01/ground_truth/ko/0001.png")
    _defect(root / "03/test/ko/0002.bmp", root / "03/ground_truth/ko/0002.bmp")
    _normal(root / "03/test/ok/0003.bmp")
    _normal(root / "03/train/ok/0004.bmp")
    dataset = build_dataset(f"btad:{root}")
    _check(dataset, ("01", "03"), [1, 0, 1, 0])  # ko sorts before ok
    assert len(build_dataset(f"btad:{root}", split="train")) == 1
    (root / "03/ground_truth/ko/0002.bmp").unlink()
    with pytest.raises(DatasetError, match=r"missing mask for .*0002\.bmp"):
        build_dataset(f"btad:{root}")


def test_mpdd_is_read_in_mvtec_layout(tmp_path, class_tree):
    class_tree(tmp_path / "mpdd" / "tubes", {"good": 2, "anomalous": 1})
    _check(build_dataset(f"mpdd:{tmp_path / 'mpdd'}"), ("tubes",), [1, 0, 0])


def test_ksdd2_labels_come_from_the_masks(tmp_path):
    root = tmp_path / "ksdd2"
    _normal(root / "test/10000.png")
    _empty_mask(root / "test/10000_GT.png")
    _defect(root / "test/10001.png", root / "test/10001_GT.png", mask_value=1)  # KSDD2 stores 0/1 masks too
    _defect(root / "train/20000.png", root / "train/20000_GT.png")
    dataset = build_dataset(f"ksdd2:{root}")
    _check(dataset, ("surface",), [0, 1])
    _check(build_dataset(f"ksdd2:{root}", split="train"), ("surface",), [1])
    (root / "test/10000_GT.png").unlink()
    with pytest.raises(DatasetError, match="10000_GT"):
        build_dataset(f"ksdd2:{root}")


def test_kolektorsdd_parts_and_bmp_labels(tmp_path):
    root = tmp_path / "kolektor"
    _normal(root / "kos01/Part0.jpg")
    _empty_mask(root / "kos01/Part0_label.bmp")
    _defect(root / "kos01/Part1.png", root / "kos01/Part1_label.bmp")  # lossless, so the box stays exact
    _normal(root / "kos02/Part0.jpg")
    _empty_mask(root / "kos02/Part0_label.bmp")
    dataset = build_dataset(f"kolektorsdd:{root}")
    _check(dataset, ("electrical commutators",), [0, 1, 0])
    assert dataset[1].defect_type == "defect"


def test_dagm_label_files_mark_defects(tmp_path):
    root = tmp_path / "dagm"
    for name in ("Class2", "Class10"):
        _normal(root / name / "Test/0001.PNG")
        _defect(root / name / "Test/0002.PNG", root / name / "Test/Label/0002_label.PNG")
    _normal(root / "Class2/Train/0003.PNG")
    dataset = build_dataset(f"dagm:{root}")
    _check(dataset, ("Class2", "Class10"), [0, 1, 0, 1])  # numeric class order
    assert len(build_dataset(f"dagm:{root}", split="Train", classes="Class2")) == 1


def test_rsdd_types_with_jpeg_ground_truth(tmp_path):
    root = tmp_path / "rsdd"
    for folder in ("Type-I RSDDs dataset", "Type-II RSDDs dataset"):
        index = next(_counter)
        image, mask = defect_image_and_mask(index, index)
        write_rgb(root / folder / "Rail surface images" / "rail_1.png", image)
        truth = root / folder / "GroundTruth" / "rail_1.jpg"
        truth.parent.mkdir(parents=True)
        assert cv2.imwrite(str(truth), mask)  # JPEG: ringing around the box must not count
    dataset = build_dataset(f"rsdd:{root}")
    _check(dataset, ("rail type I", "rail type II"), [1, 1])
    assert build_dataset(f"rsdd:{root}", classes="rail type II").class_names == ("rail type II",)


def test_bsd_labelme_polygons_become_masks(tmp_path):
    root = tmp_path / "bsd"
    _normal(root / "data/P1.png")
    index = next(_counter)
    image, _ = defect_image_and_mask(index, index)
    write_rgb(root / "data/P2.png", image)
    top, left, bottom, right = defect_box(index)
    polygon = [[left, top], [right - 1, top], [right - 1, bottom - 1], [left, bottom - 1]]
    (root / "label").mkdir()
    (root / "label/P2.json").write_text(json.dumps({"shapes": [{"shape_type": "polygon", "points": polygon}]}))
    dataset = build_dataset(f"bsd:{root}")
    _check(dataset, ("ball screw drive",), [0, 1])
    (root / "label/P2.json").write_text("{not json")
    with pytest.raises(DatasetError, match="LabelMe"):
        build_dataset(f"bsd:{root}")


def test_gc10_voc_boxes_become_masks(tmp_path):
    root = tmp_path / "gc10"
    index = next(_counter)
    image, _ = defect_image_and_mask(index, index)
    write_rgb(root / "1/img_01.jpg", image)
    top, left, bottom, right = defect_box(index)
    (root / "lable").mkdir(parents=True)
    (root / "lable/img_01.xml").write_text(
        "<annotation><object><name>1_chongkong</name><bndbox>"
        f"<xmin>{left + 1}</xmin><ymin>{top + 1}</ymin><xmax>{right}</xmax><ymax>{bottom}</ymax>"
        "</bndbox></object></annotation>"
    )
    dataset = build_dataset(f"gc10:{root}")
    assert dataset.class_names == ("steel plate",) and dataset.labels.tolist() == [1]
    sample = dataset[0]
    expected = np.zeros((HEIGHT, WIDTH), bool)
    expected[top:bottom, left:right] = True
    assert sample.defect_type == "punching_hole" and np.array_equal(sample.mask, expected)
    (root / "lable/img_01.xml").write_text('<!DOCTYPE x [<!ENTITY a "b">]><annotation>&a;</annotation>')
    with pytest.raises(DatasetError, match="VOC"):
        dataset[0]


def test_msd_two_ground_truth_folders(tmp_path):
    root = tmp_path / "msd"
    _normal(root / "good/good_01.jpg")
    _defect(root / "oil/Oil_0001.png", root / "ground_truth_2/Oil_0001.png")
    _defect(root / "scratch/Sc_0001.png", root / "ground_truth_1/Sc_0001.png")
    dataset = build_dataset(f"msd:{root}")
    _check(dataset, ("mobile phone screen",), [0, 1, 1])
    assert [sample.defect_type for sample in dataset] == ["good", "oil", "scratch"]


def test_magnetic_tile_free_and_defect_folders(tmp_path):
    root = tmp_path / "mt"
    _normal(root / "MT_Free/Imgs/exp1.jpg")
    _empty_mask(root / "MT_Free/Imgs/exp1.png")
    index = next(_counter)
    image, mask = defect_image_and_mask(index, index)
    (root / "MT_Blowhole/Imgs").mkdir(parents=True)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    assert cv2.imwrite(str(root / "MT_Blowhole/Imgs/exp2.jpg"), bgr, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert cv2.imwrite(str(root / "MT_Blowhole/Imgs/exp2.png"), mask)
    dataset = build_dataset(f"magnetic-tile:{root}")
    assert dataset.class_names == ("magnetic tile",) and dataset.labels.tolist() == [1, 0]
    assert dataset[0].defect_type == "blowhole"
    assert np.array_equal(dataset[0].mask, mask > 0) and not dataset[1].mask.any()


def test_road_crackforest_mat_ground_truth(tmp_path):
    root = tmp_path / "cfd"
    index = next(_counter)
    image, mask = defect_image_and_mask(index, index)
    write_rgb(root / "image/001.png", image)
    (root / "groundTruth").mkdir()
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = {"Segmentation": np.where(mask > 0, 2, 1).astype(np.uint8),
                  "Boundaries": np.zeros_like(mask, dtype=np.uint8)}
    savemat(str(root / "groundTruth/001.mat"), {"groundTruth": cell})
    dataset = build_dataset(f"road:{root}")
    _check(dataset, ("road",), [1])


def test_isic_and_clinicdb_are_all_lesions(tmp_path):
    isic = tmp_path / "isic"
    _defect(isic / "ISBI2016_ISIC_Part1_Test_Data/ISIC_0000003.png",
            isic / "ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_0000003_Segmentation.png")
    _check(build_dataset(f"isic:{isic}"), ("skin",), [1])
    clinic = tmp_path / "clinic"
    _defect(clinic / "Original/1.tif", clinic / "Ground Truth/1.tif")
    _defect(clinic / "Original/2.tif", clinic / "Ground Truth/2.tif")
    _check(build_dataset(f"clinicdb:{clinic}"), ("colon",), [1, 1])
    (clinic / "Ground Truth/2.tif").unlink()
    with pytest.raises(DatasetError, match=r"missing mask for .*2\.tif"):
        build_dataset(f"clinicdb:{clinic}")


def test_headct_and_brainmri_have_image_labels_only(tmp_path):
    head = tmp_path / "headct"
    for image_id in (0, 1, 2):
        _normal(head / f"head_ct/head_ct/{image_id:03d}.png")
    (head / "labels.csv").write_text("id, hemorrhage\n0,1\n1,0\n2,1\n")
    _check(build_dataset(f"headct:{head}"), ("head ct",), [1, 0, 1], has_masks=False)
    (head / "labels.csv").write_text("id, hemorrhage\n7,1\n")
    with pytest.raises(DatasetError, match=r"labels.csv:2: image .*007.png does not exist"):
        build_dataset(f"headct:{head}")
    brain = tmp_path / "brain"
    _normal(brain / "brain_tumor_dataset/no/No12.jpg")
    _normal(brain / "brain_tumor_dataset/yes/Y1.JPG")
    _normal(brain / "brain_tumor_dataset/yes/Y2.jpg")
    _check(build_dataset(f"brainmri:{brain}"), ("brain mri",), [0, 1, 1], has_masks=False)


def test_busi_unites_several_masks_of_a_scan(tmp_path):
    root = tmp_path / "busi"
    _normal(root / "normal/normal (1).png")
    _empty_mask(root / "normal/normal (1)_mask.png")
    mask = _defect(root / "benign/benign (1).png", root / "benign/benign (1)_mask.png")
    second = np.zeros_like(mask)
    second[0:2, 0:3] = 255
    assert cv2.imwrite(str(root / "benign/benign (1)_mask_1.png"), second)
    dataset = build_dataset(f"busi:{root}")
    assert dataset.class_names == ("breast",) and dataset.labels.tolist() == [0, 1]
    assert not dataset[0].mask.any()
    assert np.array_equal(dataset[1].mask, (mask > 0) | (second > 0))
    assert dataset[1].defect_type == "benign"


def test_unknown_name_lists_every_dataset():
    with pytest.raises(DatasetError, match="busi") as error:
        build_dataset("nope:/x")
    assert "gc10" in str(error.value) and "meta" in str(error.value)
