"""The official repositories' ``meta.json`` split files, read as a dataset and written from any file dataset.

Why: VCP-CLIP, ViP2-CLIP (and the AnomalyCLIP family they build on) describe every dataset by one JSON file,
``{"train": {class: [record, ...]}, "test": {...}}``, each record holding ``img_path``, ``mask_path`` (``""``
when there is none), ``cls_name``, ``specie_name`` (defect folder) and ``anomaly`` (0/1); VCP-CLIP adds
``dataset_name``. Paths are relative to the dataset root (some generators write them with the root prefixed,
which joining with the root leaves unchanged when absolute). Reading that file reuses their exact splits;
writing it lets their code evaluate on a split made here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from zsad_core.data.base import BENCHMARK_LIMITS, BENCHMARK_SUFFIXES, DatasetError, Entry, FileDataset
from zsad_core.data.datasets import _as_class_list, _select_classes
from zsad_core.data.sample import GOOD
from zsad_core.preprocess import ImageLimits

RECORD_KEYS = ("img_path", "mask_path", "cls_name", "specie_name", "anomaly")


class MetaJsonDataset(FileDataset):
    """The samples one split of a ``meta.json`` lists, classes in the file's order.

    Args:
        root: the folder the paths are relative to.
        meta_path: the split file; default ``<root>/meta.json``.
        split: ``"test"`` or ``"train"``.
        classes: keep only these classes.
        limits: decoding limits (BMP and TIFF accepted: VCP-CLIP's converted trees store BMP images).

    Raises:
        DatasetError: the file is missing or not JSON, the split or a record field is missing, a label is not
            0/1, a listed file does not exist, or only some anomalous records have masks.
    """

    def __init__(self, root: str, *, meta_path: str | None = None, split: str = "test",
                 classes: str | Sequence[str] | None = None, limits: ImageLimits = BENCHMARK_LIMITS):
        self.root = root
        self.meta_path = meta_path or os.path.join(root, "meta.json")
        by_class = self._read_split(split)
        names = _select_classes(list(by_class), _as_class_list(classes), f"{self.meta_path} (split {split!r})")
        entries = [entry for name in names for entry in by_class[name]]
        anomalous = [entry for entry in entries if entry.label == 1]
        with_masks = sum(entry.mask_path is not None for entry in anomalous)
        if 0 < with_masks < len(anomalous):
            raise DatasetError(f"{self.meta_path}: {len(anomalous) - with_masks} of {len(anomalous)} anomalous "
                               "records have no mask_path; a split needs masks for all or for none")
        super().__init__(entries, has_masks=with_masks > 0 or not anomalous, limits=limits)

    def _read_split(self, split: str) -> dict[str, list[Entry]]:
        try:
            with open(self.meta_path, encoding="utf-8") as handle:
                document = json.load(handle)
        except FileNotFoundError as exc:
            raise DatasetError(f"meta.json {self.meta_path} not found") from exc
        except (OSError, ValueError) as exc:
            raise DatasetError(f"cannot read {self.meta_path}: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get(split), dict):
            raise DatasetError(f"{self.meta_path} has no {split!r} split (an object of class -> records)")
        by_class: dict[str, list[Entry]] = {}
        for class_name, records in document[split].items():
            if not isinstance(records, list):
                raise DatasetError(f"{self.meta_path}: {split}/{class_name} is not a list of records")
            entries = [self._entry(record, f"{self.meta_path}: {split}/{class_name}[{index}]")
                       for index, record in enumerate(records)]
            if entries:
                by_class[class_name] = entries
        return by_class

    def _entry(self, record: Any, where: str) -> Entry:
        if not isinstance(record, dict):
            raise DatasetError(f"{where} is not an object")
        missing = [key for key in RECORD_KEYS if key not in record]
        if missing:
            raise DatasetError(f"{where}: missing fields {missing}")
        label = record["anomaly"]
        if label not in (0, 1) or isinstance(label, bool):
            raise DatasetError(f"{where}: anomaly must be 0 or 1, got {label!r}")
        image = self._existing(str(record["img_path"]), where)
        mask_text = str(record["mask_path"] or "")
        mask = self._existing(mask_text, where) if label == 1 and mask_text else None
        defect = GOOD if label == 0 else (str(record["specie_name"] or "") or "anomaly")
        if label == 1 and defect == GOOD:
            defect = "anomaly"
        return Entry(image, mask, int(label), str(record["cls_name"]), defect)

    def _existing(self, relative: str, where: str) -> str:
        path = os.path.join(self.root, relative)
        if not relative or not os.path.isfile(path):
            raise DatasetError(f"{where}: file {path} does not exist")
        return path


def meta_records(dataset: FileDataset, root: str, dataset_name: str | None = None) -> dict[str, list[dict]]:
    """One split of a ``meta.json``: class -> records, paths relative to ``root``, classes in dataset order.

    Raises:
        DatasetError: a file lies outside ``root``, or a mask is an annotation (JSON, XML, MAT) rather than an
            image, which the official loaders cannot read.
    """
    split: dict[str, list[dict]] = {}
    for entry in dataset.entries:
        if entry.mask_path is not None and not entry.mask_path.lower().endswith(BENCHMARK_SUFFIXES):
            raise DatasetError(f"{entry.mask_path}: only mask images can go into meta.json, not annotations")
        record: dict[str, Any] = {
            "img_path": _relative(entry.image_path, root),
            "mask_path": _relative(entry.mask_path, root) if entry.mask_path else "",
            "cls_name": entry.class_name,
            "specie_name": entry.defect_type,
            "anomaly": entry.label,
        }
        if dataset_name is not None:
            record["dataset_name"] = dataset_name
        split.setdefault(entry.class_name, []).append(record)
    return split


def write_meta_json(path: str, splits: Mapping[str, FileDataset], root: str,
                    dataset_name: str | None = None) -> str:
    """Write ``{"train": ..., "test": ...}`` for the given splits (missing ones are written empty).

    Args:
        path: the file to write (usually ``<root>/meta.json``).
        splits: split name -> dataset.
        root: the folder paths are made relative to.
        dataset_name: adds VCP-CLIP's ``dataset_name`` field to each record when given.

    Returns:
        ``path``.
    """
    document = {"train": {}, "test": {}}
    for name, dataset in splits.items():
        document[name] = meta_records(dataset, root, dataset_name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=4)
        handle.write("\n")
    return path


def _relative(path: str, root: str) -> str:
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if relative.startswith(os.pardir):
        raise DatasetError(f"{path} lies outside the dataset root {root}")
    return relative.replace(os.sep, "/")
