"""Tiny on-disk datasets in the MVTec, VisA and generic layouts, written with OpenCV.

Every anomalous image carries a red rectangle exactly where its mask is set, so a test can check that the
mask a loader returns lies over the defect in the image it returns (alignment, orientation, pairing).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

HEIGHT, WIDTH = 24, 32  # non-square, so a transposed mask cannot pass as aligned


def defect_box(index: int) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the defect of the index-th anomalous image; differs per image."""
    top, left = 2 + index % 5, 3 + (index * 3) % 11
    return top, left, top + 6, left + 9


def write_rgb(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def normal_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 100, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)  # red channel never above 100


def defect_image_and_mask(seed: int, index: int, mask_value: int = 255) -> tuple[np.ndarray, np.ndarray]:
    image = normal_image(seed)
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    top, left, bottom, right = defect_box(index)
    image[top:bottom, left:right] = (250, 10, 10)
    mask[top:bottom, left:right] = mask_value
    return image, mask


def red_region(image: np.ndarray) -> np.ndarray:
    """Where the synthetic defect was painted (robust to JPEG noise)."""
    return (image[..., 0] > 170) & (image[..., 1] < 90)


Layout = dict[str, dict[str, int]]  # class -> defect folder -> number of images


def write_class_tree(class_dir: Path, defects: dict[str, int], mask_pattern: str = "{stem}_mask.png") -> None:
    counter = 0
    for defect, count in defects.items():
        for index in range(count):
            stem = f"{index:03d}"
            if defect == "good":
                write_rgb(class_dir / "test" / defect / f"{stem}.png", normal_image(counter))
            else:
                image, mask = defect_image_and_mask(counter, counter)
                write_rgb(class_dir / "test" / defect / f"{stem}.png", image)
                mask_path = class_dir / "ground_truth" / defect / mask_pattern.format(stem=stem)
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(mask_path), mask)
            counter += 1


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Callable[[Layout], Path]:
    def build(layout: Layout) -> Path:
        root = tmp_path / "mvtec"
        for class_name, defects in layout.items():
            write_class_tree(root / class_name, defects)
        root.mkdir(exist_ok=True)
        return root

    return build


MVTEC_LAYOUT: Layout = {"bottle": {"good": 3, "broken_large": 2, "contamination": 1}, "cable": {"good": 2, "cut": 2}}


@pytest.fixture
def visa_root(tmp_path: Path) -> Path:
    """VisA-like tree with a 1cls.csv: two objects, train rows that must be ignored, 0/1 and 0/255 masks."""
    root = tmp_path / "visa"
    rows = []
    plan = {"candle": (2, 3, 1), "pcb1": (3, 1, 255)}  # object -> (normal, anomalous, mask value)
    counter = 0
    for obj, (normals, anomalies, mask_value) in plan.items():
        for index in range(normals):
            rel = f"{obj}/Data/Images/Normal/{index:03d}.JPG"
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path.with_suffix(".jpg")), normal_image(counter))
            os.replace(path.with_suffix(".jpg"), path)  # VisA's upper-case suffix
            rows.append([obj, "test", "normal", rel, ""])
            counter += 1
        for index in range(anomalies):
            rel = f"{obj}/Data/Images/Anomaly/{index:03d}.JPG"
            mask_rel = f"{obj}/Data/Masks/Anomaly/{index:03d}.png"
            image, mask = defect_image_and_mask(counter, counter, mask_value)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str((root / rel).with_suffix(".jpg")), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            os.replace((root / rel).with_suffix(".jpg"), root / rel)
            (root / mask_rel).parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / mask_rel), mask)
            rows.append([obj, "test", "anomaly", rel, mask_rel])
            counter += 1
        rows.append([obj, "train", "normal", f"{obj}/Data/Images/Normal/does_not_exist.JPG", ""])
    write_visa_csv(root, rows)
    return root


def write_visa_csv(root: Path, rows: list[list[str]]) -> Path:
    path = root / "split_csv" / "1cls.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return path


@pytest.fixture
def class_tree() -> Callable[..., None]:
    """The writer of one MVTec-style class folder, for tests that build unusual layouts."""
    return write_class_tree


@pytest.fixture
def mvtec_layout() -> Layout:
    return {name: dict(defects) for name, defects in MVTEC_LAYOUT.items()}
