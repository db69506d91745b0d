"""Run a method over a dataset with the papers' protocol and compute every metric per class.

The loop streams one class at a time: the method is set up for the class (class-aware prompts), images are
squashed to the model size in batches, and maps are kept at the evaluation resolution only for that class,
so memory holds one class's maps, not the dataset's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from zsad_core.data import BaseDataset, ProtocolSample
from zsad_core.data.loading import protocol_loader
from zsad_core.methods import ZeroShotMethod
from zsad_core.metrics import EvaluationReport, evaluate
from zsad_core.metrics.class_curves import ClassCurves, class_curves
from zsad_core.metrics.evaluate import merge_reports

# MVTec-AD's texture classes; AnoCLIP switches to its texture prompts for them, as the official code does.
TEXTURE_CLASSES = frozenset({"carpet", "grid", "leather", "tile", "wood", "woven", "stone"})

Progress = Callable[[int], None]


@dataclass
class EvaluationRun:
    """The report plus what a caller needs to pick and draw the best and worst cases.

    Attributes:
        report: per-class and mean metrics.
        scores, labels: ``(N,)`` image scores and labels in dataset order.
        indices: ``(N,)`` dataset index of every score (to reload a sample).
        paths, class_names: ``(N,)`` source of every score.
        curves: class name -> the ROC, PR, PRO curves and score lists of :mod:`zsad_core.report`; empty
            unless asked for (ranking the pixels again costs about as much as the metrics).
    """

    report: EvaluationReport
    scores: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    paths: list[str] = field(default_factory=list)
    class_names: list[str] = field(default_factory=list)
    curves: dict[str, ClassCurves] = field(default_factory=dict)


def domain_of(class_name: str) -> str:
    """``texture`` for the texture classes of MVTec-AD (and the synthetic texture families), else ``object``."""
    return "texture" if class_name in TEXTURE_CLASSES else "object"


def _batches(dataset: BaseDataset, indices: np.ndarray, size: int, resolution: str, batch_size: int,
             num_workers: int) -> Iterator[tuple[np.ndarray, list[ProtocolSample]]]:
    loader = protocol_loader(dataset, indices.tolist(), size, batch_size=batch_size, num_workers=num_workers,
                             resolution=resolution)
    for start, batch in zip(range(0, len(indices), batch_size), loader, strict=True):
        yield indices[start : start + batch_size], batch


def evaluate_method(
    method: ZeroShotMethod,
    dataset: BaseDataset,
    *,
    batch_size: int = 8,
    resolution: Literal["protocol", "original"] = "protocol",
    aupro_variant: Literal["exact", "cflow"] = "exact",
    normalize: Literal["none", "per_class_minmax"] = "none",
    classes: Sequence[str] | None = None,
    progress: Progress | None = None,
    num_workers: int = 0,
    curves: bool = False,
) -> EvaluationRun:
    """Evaluate ``method`` on ``dataset`` class by class.

    Args:
        method: a loaded method; it is set up again for every class (class-aware methods use the name).
        dataset: any zsad_core dataset (samples of a class are contiguous).
        batch_size: images per forward.
        resolution: ``protocol`` (metrics at S x S, the papers) or ``original`` (maps resized back; every image
            of a class must then share one size).
        aupro_variant: ``exact`` AU-PRO to FPR 0.3, or the papers' ``cflow`` 200-threshold variant.
        normalize: ``per_class_minmax`` reproduces the papers' transductive normalisation (evaluation only).
        classes: restrict to these classes.
        progress: called with the number of images done after every batch.
        num_workers: DataLoader processes decoding images ahead of the model (0 decodes inline).
        curves: also compute each class's ROC, PR and PRO curves for :func:`zsad_core.report.write_report`.

    Returns:
        An :class:`EvaluationRun`.
    """
    size = method.image_size
    reports, scores, labels, names, paths, order = [], [], [], [], [], []
    class_curves_by_name: dict[str, ClassCurves] = {}
    for class_name in classes or dataset.class_names:
        method.setup(class_name, domain_of(class_name))
        class_maps, class_masks, class_scores, class_labels = [], [], [], []
        for chunk, batch in _batches(dataset, dataset.indices(class_name), size, resolution, batch_size,
                                     num_workers):
            order.extend(int(i) for i in chunk)
            result = method.predict([item.model_image for item in batch])
            for item, anomaly_map, score in zip(batch, result.maps.cpu().numpy(), result.scores.cpu().numpy(),
                                                strict=True):
                class_maps.append(item.eval_map(anomaly_map))
                class_masks.append(item.mask)
                class_scores.append(float(score))
                class_labels.append(item.label)
                paths.append(item.path)
            if progress is not None:
                progress(len(batch))
        has_masks = all(mask is not None for mask in class_masks)
        maps = _stack(class_maps, class_name) if has_masks else None
        masks = _stack(class_masks, class_name) if has_masks else None
        # This class's maps are dropped when the next class starts: only its metric row (and curves) are kept.
        reports.append(evaluate(
            maps,
            masks,
            np.asarray(class_scores, dtype=np.float32),
            np.asarray(class_labels),
            [class_name] * len(class_scores),
            aupro_variant=aupro_variant,
            normalize=normalize,
        ))  # fmt: skip
        if curves:
            class_curves_by_name[class_name] = class_curves(maps, masks, np.asarray(class_scores),
                                                            np.asarray(class_labels))  # fmt: skip
        del maps, masks, class_maps, class_masks
        scores += class_scores
        labels += class_labels
        names += [class_name] * len(class_scores)
    report = merge_reports(reports)  # a class without masks leaves every class without pixel metrics, as before
    return EvaluationRun(report, np.asarray(scores), np.asarray(labels), np.asarray(order), paths, names,
                         class_curves_by_name)


def _stack(arrays: list[np.ndarray], class_name: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"class {class_name!r} mixes image sizes {sorted(shapes)}; use resolution='protocol'")
    return np.stack(arrays)
