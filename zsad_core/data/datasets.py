"""Loaders for MVTec-AD, VisA (``split_csv/1cls.csv``) and a generic folder layout.

Why these three: the papers train on the test split of one of MVTec-AD / VisA and evaluate on the other
(docs/methods.md), and users bring their own data in an MVTec-like folder tree. All three produce the same
lazily decoded :class:`~zsad_core.data.sample.Sample` stream, ordered by class, so metrics and training never
see which layout the data came from.

Expected counts on the real data (docs/methods.md): MVTec-AD test 1,725 images (1,258 anomalous, 15 classes);
VisA 1cls test 2,162 images (1,200 anomalous, 12 classes).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

from zsad_core.data.base import DatasetError, Entry, FileDataset, list_images
from zsad_core.data.sample import GOOD
from zsad_core.preprocess import DEFAULT_LIMITS, ImageLimits

GROUND_TRUTH = "ground_truth"
MVTEC_MASK_NAMES = ("{stem}_mask.png",)
# The generic layout also accepts masks named exactly like the image, as many labelling tools export them.
FOLDER_MASK_NAMES = ("{stem}_mask.png", "{stem}.png")
VISA_COLUMNS = ("object", "split", "label", "image", "mask")
VISA_LABELS = {"normal": 0, "anomaly": 1}


def _as_class_list(classes: str | Sequence[str] | None) -> list[str] | None:
    if classes is None:
        return None
    names = [classes] if isinstance(classes, str) else list(classes)
    if not names:
        raise DatasetError("classes= was given but names no class")
    return names


def _select_classes(found: list[str], wanted: list[str] | None, where: str) -> list[str]:
    if not found:
        raise DatasetError(f"no classes found in {where}")
    if wanted is None:
        return found
    unknown = [name for name in wanted if name not in found]
    if unknown:
        raise DatasetError(f"classes {unknown} are not in {where}; available: {found}")
    return [name for name in found if name in wanted]


def _find_mask(gt_dir: str, defect: str, image_path: str, mask_names: Sequence[str]) -> tuple[str | None, list[str]]:
    """The first existing mask candidate (or None) and every candidate tried, for the error message."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    tried = [os.path.join(gt_dir, defect, pattern.format(stem=stem)) for pattern in mask_names]
    return next((path for path in tried if os.path.isfile(path)), None), tried


def scan_class_folder(
    class_dir: str,
    class_name: str,
    *,
    split: str,
    mask_names: Sequence[str],
    require_masks: bool,
) -> list[Entry]:
    """List the samples of one class in the MVTec-style tree ``<class_dir>/<split>/<defect>/*``.

    Args:
        class_dir: the class folder, holding ``<split>/`` and optionally ``ground_truth/``.
        class_name: name recorded on the samples.
        split: ``"test"`` or ``"train"``.
        mask_names: mask file name patterns tried in order under ``ground_truth/<defect>/``; ``{stem}`` is
            the image file name without suffix.
        require_masks: if True an anomalous image without a mask is an error; if False masks are not
            looked up at all (the dataset has image-level labels only).

    Returns:
        The entries, defect folders in sorted order, files in sorted order.

    Raises:
        DatasetError: the split folder is missing or empty, a file lies outside a defect folder, a file is
            not an image, or an anomalous image has no mask.
    """
    split_dir = os.path.join(class_dir, split)
    if not os.path.isdir(split_dir):
        raise DatasetError(f"class {class_name!r}: no {split}/ folder in {class_dir}")
    gt_dir = os.path.join(class_dir, GROUND_TRUTH)
    entries = []
    for defect in sorted(os.listdir(split_dir)):
        defect_dir = os.path.join(split_dir, defect)
        if defect.startswith("."):
            continue
        if not os.path.isdir(defect_dir):
            raise DatasetError(f"{defect_dir}: images must be in {split}/{GOOD}/ or {split}/<defect type>/")
        label = 0 if defect == GOOD else 1
        for image_path in list_images(defect_dir):
            mask_path = None
            if label == 1 and require_masks:
                mask_path, tried = _find_mask(gt_dir, defect, image_path, mask_names)
                if mask_path is None:
                    raise DatasetError(f"missing mask for {image_path} (looked for {' or '.join(tried)})")
            entries.append(Entry(image_path, mask_path, label, class_name, defect))
    if not entries:
        raise DatasetError(f"class {class_name!r} has no images under {split_dir}")
    return entries


def _class_dirs(root: str, split: str) -> list[str]:
    if not os.path.isdir(root):
        raise DatasetError(f"dataset root {root} is not a folder")
    return sorted(
        name for name in os.listdir(root) if not name.startswith(".") and os.path.isdir(os.path.join(root, name, split))
    )


class MVTecDataset(FileDataset):
    """MVTec-AD: ``<root>/<class>/test/<defect>/*.png``, masks in ``ground_truth/<defect>/<stem>_mask.png``.

    Args:
        root: dataset folder holding one folder per class.
        classes: keep only these classes (a name or a list); default all folders that have ``<split>/``.
        split: ``"test"`` (the evaluation and auxiliary-training split) or ``"train"`` (good images only).
        limits: decoding limits.

    Raises:
        DatasetError: no class found, an unknown class requested, an empty class, or a missing mask.
    """

    def __init__(
        self,
        root: str,
        *,
        classes: str | Sequence[str] | None = None,
        split: str = "test",
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.root = root
        names = _select_classes(_class_dirs(root, split), _as_class_list(classes), f"{root} (folders with {split}/)")
        entries = []
        for name in names:
            entries += scan_class_folder(
                os.path.join(root, name), name, split=split, mask_names=MVTEC_MASK_NAMES, require_masks=True
            )
        super().__init__(entries, has_masks=True, limits=limits)


class FolderDataset(FileDataset):
    """A user's data in an MVTec-like tree, with masks optional for the whole dataset.

    Layout: ``<root>/<class>/test/good/*``, ``<root>/<class>/test/<defect>/*`` and
    ``<root>/<class>/ground_truth/<defect>/<stem>_mask.png`` (or ``<stem>.png``). If ``<root>/test`` exists,
    ``root`` is one class named after its folder. If no class has a ``ground_truth/`` folder the dataset has
    image-level labels only and every mask is ``None``; if any has one, every anomalous image needs a mask.

    Args:
        root: dataset folder.
        classes: keep only these classes; default all.
        split: the split folder to read.
        limits: decoding limits.

    Raises:
        DatasetError: as :class:`MVTecDataset`.
    """

    def __init__(
        self,
        root: str,
        *,
        classes: str | Sequence[str] | None = None,
        split: str = "test",
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.root = root
        if os.path.isdir(os.path.join(root, split)):
            class_dirs = {os.path.basename(os.path.normpath(os.path.abspath(root))): root}
        else:
            class_dirs = {name: os.path.join(root, name) for name in _class_dirs(root, split)}
        names = _select_classes(sorted(class_dirs), _as_class_list(classes), f"{root} (folders with {split}/)")
        has_masks = any(os.path.isdir(os.path.join(class_dirs[name], GROUND_TRUTH)) for name in names)
        entries = []
        for name in names:
            entries += scan_class_folder(
                class_dirs[name], name, split=split, mask_names=FOLDER_MASK_NAMES, require_masks=has_masks
            )
        super().__init__(entries, has_masks=has_masks, limits=limits)


class VisADataset(FileDataset):
    """VisA through its ``split_csv/1cls.csv`` split file, the split every paper evaluates on.

    The CSV has columns ``object,split,label,image,mask``; ``label`` is ``normal`` or ``anomaly`` and the
    paths are relative to ``root``; ``mask`` is empty for normal images. VisA does not name defect types, so
    anomalous samples get ``defect_type="anomaly"``. Masks are binarised at > 0 because releases store them
    as 0/255 or 0/1.

    Args:
        root: the VisA folder (the one holding ``split_csv/`` and the class folders).
        csv_path: the split file; default ``<root>/split_csv/1cls.csv``.
        split: CSV ``split`` value to keep.
        classes: keep only these objects; default all objects present in the split.
        limits: decoding limits.

    Raises:
        DatasetError: the CSV is missing or malformed, a label is unknown, a listed image or mask file does
            not exist, an anomalous row has no mask, or a requested class has no rows.
    """

    def __init__(
        self,
        root: str,
        *,
        csv_path: str | None = None,
        split: str = "test",
        classes: str | Sequence[str] | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ):
        self.root = root
        self.csv_path = csv_path or os.path.join(root, "split_csv", "1cls.csv")
        by_class: dict[str, list[Entry]] = {}
        for entry in self._read_rows(split):
            by_class.setdefault(entry.class_name, []).append(entry)
        names = _select_classes(sorted(by_class), _as_class_list(classes), f"{self.csv_path} (split {split!r})")
        super().__init__([entry for name in names for entry in by_class[name]], has_masks=True, limits=limits)

    def _read_rows(self, split: str) -> list[Entry]:
        if not os.path.isfile(self.csv_path):
            raise DatasetError(f"VisA split file {self.csv_path} not found")
        with open(self.csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [column for column in VISA_COLUMNS if column not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{self.csv_path}: missing columns {missing} (need {list(VISA_COLUMNS)})")
            # A short row yields None for its missing cells; read them as empty so the checks below name it.
            cleaned = ({key: (value or "").strip() for key, value in row.items()} for row in reader)
            rows = [(reader.line_num, row) for row in cleaned if row["split"] == split]
        return [self._entry(line, row) for line, row in rows]

    def _entry(self, line: int, row: dict[str, str]) -> Entry:
        where = f"{self.csv_path}:{line}"
        label_text = row["label"]
        if label_text not in VISA_LABELS:
            raise DatasetError(f"{where}: label {label_text!r} is not one of {sorted(VISA_LABELS)}")
        label = VISA_LABELS[label_text]
        image_path = self._existing(row["image"], where, "image")
        mask_text = row["mask"]
        if label == 0 and mask_text:
            raise DatasetError(f"{where}: a normal image lists a mask ({mask_text})")
        if label == 1 and not mask_text:
            raise DatasetError(f"{where}: anomalous image {image_path} has no mask")
        mask_path = self._existing(mask_text, where, "mask") if label == 1 else None
        return Entry(image_path, mask_path, label, row["object"], GOOD if label == 0 else "anomaly")

    def _existing(self, relative: str, where: str, what: str) -> str:
        path = os.path.join(self.root, relative)
        if not relative or not os.path.isfile(path):
            raise DatasetError(f"{where}: {what} file {path} does not exist")
        return path
