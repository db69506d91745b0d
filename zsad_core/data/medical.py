"""Medical benchmarks of the zero-shot papers (CLIP-AD, ViP2-CLIP), each read in its published layout.

Which metrics each allows: ISIC and CVC-ClinicDB show a lesion in every image (pixel metrics only); HeadCT and
BrainMRI have image labels only (image metrics only); BUSI has both (normal scans and lesion masks).
Layouts follow CLIP-AD's dataset readme and loaders, which read the downloads unchanged.
"""

from __future__ import annotations

import csv
import glob
import os

import numpy as np

from zsad_core.data.base import (
    BENCHMARK_LIMITS,
    BENCHMARK_SUFFIXES,
    DatasetError,
    Entry,
    FileDataset,
    list_images,
    read_mask,
)
from zsad_core.data.industrial import file_stem, require_dir, sibling_file
from zsad_core.data.sample import GOOD
from zsad_core.preprocess import ImageLimits

LESION = "lesion"


class ISICDataset(FileDataset):
    """ISIC 2016 (ISBI part 1 test): ``ISBI2016_ISIC_Part1_Test_Data/<id>.jpg`` and
    ``ISBI2016_ISIC_Part1_Test_GroundTruth/<id>_Segmentation.png``."""

    class_name = "skin"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        image_dir = require_dir(os.path.join(root, "ISBI2016_ISIC_Part1_Test_Data"), "ISIC images")
        truth_dir = os.path.join(root, "ISBI2016_ISIC_Part1_Test_GroundTruth")
        entries = []
        for image in list_images(image_dir, BENCHMARK_SUFFIXES):
            mask = sibling_file(truth_dir, file_stem(image) + "_Segmentation")
            if mask is None:
                raise DatasetError(f"missing mask {file_stem(image)}_Segmentation.png for {image} in {truth_dir}")
            entries.append(Entry(image, mask, 1, self.class_name, LESION))
        super().__init__(entries, has_masks=True, limits=limits)


class ClinicDBDataset(FileDataset):
    """CVC-ClinicDB (polyps): ``<root>/Original/<n>.tif`` and ``<root>/Ground Truth/<n>.tif`` (or PNG)."""

    class_name = "colon"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        image_dir = require_dir(os.path.join(root, "Original"), "CVC-ClinicDB images")
        truth_dir = os.path.join(root, "Ground Truth")
        entries = []
        for image in list_images(image_dir, BENCHMARK_SUFFIXES):
            mask = sibling_file(truth_dir, file_stem(image))
            if mask is None:
                raise DatasetError(f"missing mask for {image} in {truth_dir}")
            entries.append(Entry(image, mask, 1, self.class_name, "polyp"))
        super().__init__(entries, has_masks=True, limits=limits)


class HeadCTDataset(FileDataset):
    """HeadCT (hemorrhage): ``<root>/labels.csv`` (``id, hemorrhage``) and ``<root>/head_ct/head_ct/NNN.png``.

    Image labels only; the CSV is the label source, and every row's image must exist.
    """

    class_name = "head ct"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        csv_path = os.path.join(root, "labels.csv")
        if not os.path.isfile(csv_path):
            raise DatasetError(f"HeadCT label file {csv_path} not found")
        entries = []
        with open(csv_path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        for line, row in enumerate(rows[1:], start=2):
            try:
                image_id, label = int(row[0]), int(row[1])
            except (IndexError, ValueError) as exc:
                raise DatasetError(f"{csv_path}:{line}: expected 'id, hemorrhage' integers, got {row}") from exc
            if label not in (0, 1):
                raise DatasetError(f"{csv_path}:{line}: hemorrhage must be 0 or 1, got {label}")
            image = os.path.join(root, "head_ct", "head_ct", f"{image_id:03d}.png")
            if not os.path.isfile(image):
                raise DatasetError(f"{csv_path}:{line}: image {image} does not exist")
            entries.append(Entry(image, None, label, self.class_name, "hemorrhage" if label else GOOD))
        if not entries:
            raise DatasetError(f"{csv_path} lists no images")
        super().__init__(entries, has_masks=False, limits=limits)


class BrainMRIDataset(FileDataset):
    """Brain tumour MRI: ``<root>/brain_tumor_dataset/{no,yes}/*``; image labels only (``yes`` = tumour)."""

    class_name = "brain mri"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        base = require_dir(os.path.join(root, "brain_tumor_dataset"), "BrainMRI images")
        entries = []
        for folder, label in (("no", 0), ("yes", 1)):
            for image in list_images(require_dir(os.path.join(base, folder), "BrainMRI"), BENCHMARK_SUFFIXES):
                entries.append(Entry(image, None, label, self.class_name, "tumor" if label else GOOD))
        super().__init__(entries, has_masks=False, limits=limits)


class BUSIDataset(FileDataset):
    """Breast ultrasound (BUSI): ``<root>/{benign,malignant,normal}/<name> (k).png``.

    Each scan's masks lie beside it as ``<name> (k)_mask.png`` and, for scans with several lesions,
    ``<name> (k)_mask_1.png``, ``_mask_2.png``; the sample's mask is their union. ``normal`` scans are good.
    """

    class_name = "breast"
    FOLDERS = (("normal", 0), ("benign", 1), ("malignant", 1))

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "BUSI root")
        entries = []
        for folder, label in self.FOLDERS:
            image_dir = os.path.join(root, folder)
            if not os.path.isdir(image_dir):
                continue
            for image in list_images(image_dir, BENCHMARK_SUFFIXES):
                if "_mask" in file_stem(image):
                    continue
                mask = sibling_file(image_dir, file_stem(image) + "_mask")
                if label and mask is None:
                    raise DatasetError(f"missing mask {file_stem(image)}_mask.png for {image}")
                entries.append(Entry(image, mask if label else None, label, self.class_name,
                                     folder if label else GOOD))
        if not entries:
            raise DatasetError(f"BUSI: no images in {[name for name, _ in self.FOLDERS]} under {root}")
        super().__init__(entries, has_masks=True, limits=limits)

    def read_entry_mask(self, entry: Entry, shape: tuple[int, int]) -> np.ndarray:
        """Union of the scan's ``_mask`` and ``_mask_<k>`` files."""
        first = entry.mask_path or ""
        extra = sorted(glob.glob(glob.escape(os.path.splitext(first)[0]) + "_*.png"))
        mask = read_mask(first, self.limits)
        for path in extra:
            more = read_mask(path, self.limits)
            if more.shape != mask.shape:
                raise DatasetError(f"{path} is {more.shape}, {first} is {mask.shape}")
            mask |= more
        return mask
