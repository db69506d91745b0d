"""Industrial benchmarks of the zero-shot papers, each read in the layout its authors publish.

Which datasets: the tables of VCP-CLIP (BSD, GC10-DET, KSDD2, MSD, Road, RSDD, BTAD, DAGM besides MVTec-AD and
VisA) and ViP2-CLIP (MPDD, BTAD, KolektorSDD, DAGM). "MSD" in VCP-CLIP is the mobile phone screen set of
Zhang et al. (ICASSP 2022); the magnetic tile set (Huang et al. 2020) is offered as well because the two
abbreviations are confused in follow-up work. "Road" is read as CrackForest (Shi et al. 2016), the road
crack set with per-pixel ground truth.

Why native layouts instead of one converted tree: the official repositories convert every dataset with a
one-off script into an MVTec-like tree and a ``meta.json``; reading the download as it is avoids that step
(and :mod:`zsad_core.data.meta_json` still reads their ``meta.json`` when a converted copy exists).

Datasets in which every test image is defective (RSDD, GC10-DET, Road) give pixel metrics only: image AUROC
needs normal images. Labels are always known when a dataset is built; where a dataset states them only
through its masks (KSDD2, KolektorSDD) the masks are read once at build time for that.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import ClassVar

import cv2
import numpy as np
from defusedxml import DefusedXmlException, ElementTree

from zsad_core.data.base import (
    BENCHMARK_LIMITS,
    BENCHMARK_SUFFIXES,
    DatasetError,
    Entry,
    FileDataset,
    list_images,
    read_mask,
)
from zsad_core.data.datasets import _as_class_list, _select_classes
from zsad_core.data.sample import GOOD
from zsad_core.preprocess import ImageLimits

DEFECT = "defect"


def require_dir(path: str, what: str) -> str:
    """``path`` if it is a folder, else a :class:`DatasetError` naming ``what`` was expected there."""
    if not os.path.isdir(path):
        raise DatasetError(f"{what}: folder {path} does not exist")
    return path


def sibling_file(folder: str, stem: str, suffixes: Sequence[str] = BENCHMARK_SUFFIXES) -> str | None:
    """The file ``<folder>/<stem><suffix>`` for the first suffix that exists (any case), or None."""
    if not os.path.isdir(folder):
        return None
    by_lower = {name.lower(): name for name in os.listdir(folder)}
    for suffix in suffixes:
        name = by_lower.get((stem + suffix).lower())
        if name is not None:
            return os.path.join(folder, name)
    return None


def file_stem(path: str) -> str:
    """The file name of ``path`` without folder and suffix."""
    return os.path.splitext(os.path.basename(path))[0]


def _keep(entries: list[Entry], classes: str | Sequence[str] | None, where: str) -> list[Entry]:
    found = list(dict.fromkeys(entry.class_name for entry in entries))
    names = _select_classes(found, _as_class_list(classes), where)
    return [entry for entry in entries if entry.class_name in names]


def _mask_has_defect(path: str, limits: ImageLimits) -> bool:
    return bool(read_mask(path, limits).any())


class BTADDataset(FileDataset):
    """BTAD (beanTech): ``<root>/{01,02,03}/test/{ok,ko}/*``, masks ``<class>/ground_truth/ko/<stem>.*``.

    Product 01 stores BMP images with PNG masks, 02 PNG with PNG, 03 BMP with BMP; masks share the image's
    stem. Good images are in ``ok`` (not ``good``), defective ones in ``ko``.
    """

    def __init__(self, root: str, *, classes: str | Sequence[str] | None = None, split: str = "test",
                 limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "BTAD root")
        found = sorted(name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name, split)))
        entries = []
        for name in _select_classes(found, _as_class_list(classes), f"{root} (folders with {split}/)"):
            class_dir = os.path.join(root, name)
            for folder in sorted(os.listdir(os.path.join(class_dir, split))):
                image_dir = os.path.join(class_dir, split, folder)
                if folder.startswith(".") or not os.path.isdir(image_dir):
                    continue
                label = 0 if folder == "ok" else 1
                for image in list_images(image_dir, BENCHMARK_SUFFIXES):
                    mask = None
                    if label:
                        mask = sibling_file(os.path.join(class_dir, "ground_truth", folder), file_stem(image))
                        if mask is None:
                            raise DatasetError(f"missing mask for {image} in {class_dir}/ground_truth/{folder}/")
                    entries.append(Entry(image, mask, label, name, GOOD if label == 0 else folder))
        super().__init__(entries, has_masks=True, limits=limits)


class KSDD2Dataset(FileDataset):
    """KolektorSDD2: ``<root>/<split>/<id>.png`` beside ``<id>_GT.png``; an image is defective iff its mask is.

    KSDD2 has no label file, so every mask is read when the dataset is built (about 1,000 small PNGs for the
    test split) to know the labels before any image is decoded.
    """

    class_name = "surface"

    def __init__(self, root: str, *, split: str = "test", limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        split_dir = require_dir(os.path.join(root, split), "KSDD2 split")
        entries = []
        for image in list_images(split_dir, BENCHMARK_SUFFIXES):
            if file_stem(image).endswith("_GT"):
                continue
            mask = sibling_file(split_dir, file_stem(image) + "_GT")
            if mask is None:
                raise DatasetError(f"missing mask {file_stem(image)}_GT.png for {image}")
            label = int(_mask_has_defect(mask, limits))
            entries.append(Entry(image, mask if label else None, label, self.class_name, DEFECT if label else GOOD))
        if not entries:
            raise DatasetError(f"no images in {split_dir}")
        super().__init__(entries, has_masks=True, limits=limits)


class KolektorSDDDataset(FileDataset):
    """KolektorSDD (v1): ``<root>/kosNN/PartK.jpg`` beside ``PartK_label.bmp``; 50 commutators, no split.

    Defective iff the label mask has a pixel set; every mask is read at build time (399 small BMPs). The class
    is named as ViP2-CLIP's prompts name it.
    """

    class_name = "electrical commutators"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "KolektorSDD root")
        entries = []
        for folder in sorted(os.listdir(root)):
            part_dir = os.path.join(root, folder)
            if folder.startswith(".") or not os.path.isdir(part_dir):
                continue
            for image in list_images(part_dir, BENCHMARK_SUFFIXES):
                if file_stem(image).endswith("_label"):
                    continue
                mask = sibling_file(part_dir, file_stem(image) + "_label")
                if mask is None:
                    raise DatasetError(f"missing label mask {file_stem(image)}_label.bmp for {image}")
                label = int(_mask_has_defect(mask, limits))
                entries.append(Entry(image, mask if label else None, label, self.class_name,
                                     DEFECT if label else GOOD))
        if not entries:
            raise DatasetError(f"no kosNN folders with images in {root}")
        super().__init__(entries, has_masks=True, limits=limits)


class DAGMDataset(FileDataset):
    """DAGM 2007: ``<root>/ClassN/{Train,Test}/NNNN.PNG``, defect masks ``.../Label/NNNN_label.PNG``.

    An image with a label file is defective. DAGM's masks are coarse ellipses around each defect, so its pixel
    metrics measure overlap with an ellipse rather than with the defect's outline.
    """

    def __init__(self, root: str, *, classes: str | Sequence[str] | None = None, split: str = "Test",
                 limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "DAGM root")
        found = sorted((name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name, split))),
                       key=lambda name: (len(name), name))  # Class2 before Class10
        entries = []
        for name in _select_classes(found, _as_class_list(classes), f"{root} (folders with {split}/)"):
            split_dir = os.path.join(root, name, split)
            label_dir = os.path.join(split_dir, "Label")
            for image in list_images(split_dir, BENCHMARK_SUFFIXES):
                mask = sibling_file(label_dir, file_stem(image) + "_label")
                label = int(mask is not None)
                entries.append(Entry(image, mask, label, name, DEFECT if label else GOOD))
        super().__init__(entries, has_masks=True, limits=limits)


class RSDDDataset(FileDataset):
    """RSDDs: ``<root>/Type-I RSDDs dataset/{Rail surface images,GroundTruth}/<name>.jpg`` and Type-II alike.

    Every image shows a defect (pixel metrics only). The ground truth is JPEG, thresholded at half range.
    """

    TYPES: ClassVar[dict[str, str]] = {"Type-I RSDDs dataset": "rail type I", "Type-II RSDDs dataset": "rail type II"}

    def __init__(self, root: str, *, classes: str | Sequence[str] | None = None,
                 limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "RSDD root")
        entries = []
        for folder, name in self.TYPES.items():
            type_dir = os.path.join(root, folder)
            if not os.path.isdir(type_dir):
                continue
            truth_dir = os.path.join(type_dir, "GroundTruth")
            for image in list_images(require_dir(os.path.join(type_dir, "Rail surface images"), name),
                                     BENCHMARK_SUFFIXES):
                mask = sibling_file(truth_dir, file_stem(image))
                if mask is None:
                    raise DatasetError(f"missing ground truth for {image} in {truth_dir}")
                entries.append(Entry(image, mask, 1, name, DEFECT))
        super().__init__(_keep(entries, classes, f"{root} (folders {list(self.TYPES)})"), has_masks=True,
                         limits=limits)


class BSDDataset(FileDataset):
    """BSData (ball screw drives): ``<root>/data/*`` images, LabelMe polygons in ``<root>/label/<stem>.json``.

    An image with a label file holding at least one shape shows pitting; its mask is the union of the filled
    polygons (rectangles too), drawn at the image's size when the sample is decoded.
    """

    class_name = "ball screw drive"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        label_dir = os.path.join(root, "label")
        entries = []
        for image in list_images(require_dir(os.path.join(root, "data"), "BSD images"), BENCHMARK_SUFFIXES):
            annotation = os.path.join(label_dir, file_stem(image) + ".json")
            label = int(os.path.isfile(annotation) and bool(_labelme_shapes(annotation)))
            entries.append(Entry(image, annotation if label else None, label, self.class_name,
                                 "pitting" if label else GOOD))
        super().__init__(entries, has_masks=True, limits=limits)

    def read_entry_mask(self, entry: Entry, shape: tuple[int, int]) -> np.ndarray:
        """Fill every LabelMe shape of the entry's JSON file."""
        canvas = np.zeros(shape, np.uint8)
        for shape_type, points in _labelme_shapes(entry.mask_path or ""):
            corners = np.rint(points).astype(np.int32)
            if shape_type == "rectangle":
                (x0, y0), (x1, y1) = corners[0], corners[-1]
                cv2.rectangle(canvas, (int(x0), int(y0)), (int(x1), int(y1)), 1, thickness=-1)
            else:
                cv2.fillPoly(canvas, [corners.reshape(-1, 1, 2)], 1)
        return canvas > 0


def _labelme_shapes(path: str) -> list[tuple[str, np.ndarray]]:
    """``(shape_type, (K, 2) points)`` of a LabelMe file; a malformed file is a :class:`DatasetError`."""
    try:
        with open(path, encoding="utf-8") as handle:
            document = json.load(handle)
        shapes = [(str(shape.get("shape_type") or "polygon"), np.asarray(shape["points"], dtype=np.float64))
                  for shape in document.get("shapes", [])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"cannot read LabelMe annotation {path}: {exc}") from exc
    for _, points in shapes:
        if points.ndim != 2 or points.shape[1] != 2 or len(points) < 2:
            raise DatasetError(f"{path}: a shape's points are not a list of (x, y) pairs")
    return shapes


class GC10DETDataset(FileDataset):
    """GC10-DET (steel plates): ``<root>/<1..10>/*.jpg``, Pascal VOC boxes in ``<root>/lable/<stem>.xml``.

    The release spells the annotation folder ``lable`` (``label`` is accepted too). GC10-DET annotates boxes
    only, so each mask is the union of filled boxes and the defect type is the image folder's defect name.
    Every image is defective (pixel metrics only).
    """

    class_name = "steel plate"
    DEFECTS = ("punching_hole", "welding_line", "crescent_gap", "water_spot", "oil_spot", "silk_spot",
               "inclusion", "rolled_pit", "crease", "waist_folding")

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "GC10-DET root")
        label_dir = next((os.path.join(root, name) for name in ("lable", "label")
                          if os.path.isdir(os.path.join(root, name))), None)
        if label_dir is None:
            raise DatasetError(f"GC10-DET: no lable/ (or label/) folder of VOC XML files in {root}")
        entries = []
        for index, defect in enumerate(self.DEFECTS, start=1):
            folder = os.path.join(root, str(index))
            if not os.path.isdir(folder):
                continue
            for image in list_images(folder, BENCHMARK_SUFFIXES):
                annotation = os.path.join(label_dir, file_stem(image) + ".xml")
                if not os.path.isfile(annotation):
                    raise DatasetError(f"missing VOC annotation {annotation} for {image}")
                entries.append(Entry(image, annotation, 1, self.class_name, defect))
        if not entries:
            raise DatasetError(f"GC10-DET: no images in the folders 1..10 of {root}")
        super().__init__(entries, has_masks=True, limits=limits)

    def read_entry_mask(self, entry: Entry, shape: tuple[int, int]) -> np.ndarray:
        """Fill every ``bndbox`` of the entry's VOC file (VOC corners are 1-based and inclusive)."""
        canvas = np.zeros(shape, np.uint8)
        for x0, y0, x1, y1 in _voc_boxes(entry.mask_path or ""):
            cv2.rectangle(canvas, (x0 - 1, y0 - 1), (x1 - 1, y1 - 1), 1, thickness=-1)
        return canvas > 0


def _voc_boxes(path: str) -> list[tuple[int, int, int, int]]:
    try:
        tree = ElementTree.parse(path)
        boxes = [tuple(int(float(box.findtext(key) or "")) for key in ("xmin", "ymin", "xmax", "ymax"))
                 for box in tree.iter("bndbox")]
    except (OSError, ElementTree.ParseError, DefusedXmlException, ValueError) as exc:
        raise DatasetError(f"cannot read VOC annotation {path}: {exc}") from exc
    if not boxes:
        raise DatasetError(f"{path}: no bndbox in a GC10-DET annotation")
    return boxes  # type: ignore[return-value]


class MSDDataset(FileDataset):
    """Mobile phone screen defects (MSD): ``<root>/{good,oil,scratch,stain}/*.jpg``.

    Masks ``<stem>.png`` lie in ``ground_truth_1/`` (scratch, stain) or ``ground_truth_2/`` (oil), as in the
    public release; both folders are searched for every defective image.
    """

    class_name = "mobile phone screen"
    DEFECTS = ("oil", "scratch", "stain")

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "MSD root")
        truth_dirs = [os.path.join(root, name) for name in ("ground_truth_1", "ground_truth_2")]
        entries = []
        for folder in (GOOD, *self.DEFECTS):
            image_dir = os.path.join(root, folder)
            if not os.path.isdir(image_dir):
                continue
            label = int(folder != GOOD)
            for image in list_images(image_dir, BENCHMARK_SUFFIXES):
                mask = None
                if label:
                    mask = next((found for truth in truth_dirs if (found := sibling_file(truth, file_stem(image)))),
                                None)
                    if mask is None:
                        raise DatasetError(f"missing mask for {image} in ground_truth_1/ or ground_truth_2/")
                entries.append(Entry(image, mask, label, self.class_name, folder))
        if not entries:
            raise DatasetError(f"MSD: none of the folders {[GOOD, *self.DEFECTS]} holds images in {root}")
        super().__init__(entries, has_masks=True, limits=limits)


class MagneticTileDataset(FileDataset):
    """Magnetic tile defects: ``<root>/MT_<Defect>/Imgs/<stem>.jpg`` with the mask ``<stem>.png`` beside it.

    ``MT_Free`` holds the good tiles. Every image has a mask file, empty for good tiles.
    """

    class_name = "magnetic tile"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = require_dir(root, "magnetic tile root")
        entries = []
        for folder in sorted(os.listdir(root)):
            image_dir = os.path.join(root, folder, "Imgs")
            if not folder.startswith("MT_") or not os.path.isdir(image_dir):
                continue
            defect = folder[3:].lower()
            label = int(defect != "free")
            for image in list_images(image_dir, (".jpg", ".jpeg", ".png")):
                if image.lower().endswith(".png"):
                    continue  # the masks
                mask = sibling_file(image_dir, file_stem(image), (".png",))
                if label and mask is None:
                    raise DatasetError(f"missing mask {file_stem(image)}.png for {image}")
                entries.append(Entry(image, mask if label else None, label, self.class_name,
                                     defect if label else GOOD))
        if not entries:
            raise DatasetError(f"no MT_*/Imgs folders with images in {root}")
        super().__init__(entries, has_masks=True, limits=limits)


class CrackForestDataset(FileDataset):
    """Road cracks, CrackForest (CFD): ``<root>/image/NNN.jpg``, ``<root>/groundTruth/NNN.mat``.

    Each MATLAB file holds a ``groundTruth`` struct whose ``Segmentation`` is 1 on road and 2 on crack. The
    files are read with :func:`scipy.io.loadmat` (plain arrays; MATLAB files hold no executable objects).
    Every image shows a crack (pixel metrics only).
    """

    class_name = "road"

    def __init__(self, root: str, *, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        truth_dir = require_dir(os.path.join(root, "groundTruth"), "CrackForest ground truth")
        entries = []
        for image in list_images(require_dir(os.path.join(root, "image"), "CrackForest images"),
                                 BENCHMARK_SUFFIXES):
            annotation = os.path.join(truth_dir, file_stem(image) + ".mat")
            if not os.path.isfile(annotation):
                raise DatasetError(f"missing ground truth {annotation} for {image}")
            entries.append(Entry(image, annotation, 1, self.class_name, "crack"))
        super().__init__(entries, has_masks=True, limits=limits)

    def read_entry_mask(self, entry: Entry, shape: tuple[int, int]) -> np.ndarray:
        """Crack pixels (value 2) of the ``Segmentation`` field."""
        from scipy.io import loadmat

        path = entry.mask_path or ""
        try:
            truth = loadmat(path, squeeze_me=True, struct_as_record=False)["groundTruth"]
            if isinstance(truth, np.ndarray):  # the struct inside a MATLAB cell
                truth = truth.flat[0]
            segmentation = np.asarray(truth.Segmentation)
        except (OSError, ValueError, KeyError, AttributeError, NotImplementedError) as exc:
            raise DatasetError(f"cannot read CrackForest ground truth {path}: {exc}") from exc
        if segmentation.shape != shape:
            raise DatasetError(f"{path}: segmentation is {segmentation.shape}, image is {shape}")
        return segmentation == 2
