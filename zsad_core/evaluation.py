"""Run a method over a dataset with the papers' protocol and compute every metric per class.

The loop streams one class at a time: the method is set up for the class (class-aware prompts), images are
squashed to the model size in batches, and maps are kept at the evaluation resolution only for that class,
so memory holds one class's maps, not the dataset's.

Few-shot evaluation follows the papers' protocol: for each class, k good images drawn with a seed from the
dataset's *train* split become the method's references (:mod:`zsad_core.few_shot`), and the metrics of
several seeds are averaged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from zsad_core.data import BaseDataset, DatasetError, ProtocolSample, to_protocol
from zsad_core.data.loading import protocol_loader
from zsad_core.few_shot import FewShotMethod, FusionOptions, MemoryOptions, build_memory
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


@dataclass(frozen=True)
class ReferenceDraw:
    """Which few-shot references an evaluation gives the method.

    Attributes:
        dataset: where references come from: the good images of the evaluated dataset's train split.
        shots: references per class (k >= 1).
        seed: seed of the draw; the same seed draws the same images on every run.
        memory: how the reference memory is built (taps, feature kind, distance, bound).
        fusion: how its distances join the zero-shot result.
    """

    dataset: BaseDataset
    shots: int
    seed: int = 0
    memory: MemoryOptions = field(default_factory=MemoryOptions)
    fusion: FusionOptions = field(default_factory=FusionOptions)


def draw_references(dataset: BaseDataset, class_name: str, shots: int, seed: int) -> np.ndarray:
    """``(shots,)`` sorted dataset indices of good images of ``class_name``, drawn without replacement.

    Raises:
        DatasetError: the class has fewer good images than ``shots``.
    """
    if shots < 1:
        raise ValueError(f"shots must be >= 1, got {shots}")
    indices = dataset.indices(class_name)
    good = indices[dataset.labels[indices] == 0]
    if len(good) < shots:
        raise DatasetError(f"class {class_name!r} has {len(good)} good reference images, {shots} shots asked for")
    return np.sort(np.random.default_rng(seed).choice(good, size=shots, replace=False))


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
    references: ReferenceDraw | None = None,
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
        references: few-shot references drawn for every class, or None for zero-shot.

    Returns:
        An :class:`EvaluationRun`.
    """
    size = method.image_size
    reports, scores, labels, names, paths, order = [], [], [], [], [], []
    class_curves_by_name: dict[str, ClassCurves] = {}
    for class_name in classes or dataset.class_names:
        scorer = method if references is None else _with_drawn_references(method, references, class_name)
        scorer.setup(class_name, domain_of(class_name))
        class_maps, class_masks, class_scores, class_labels = [], [], [], []
        for chunk, batch in _batches(dataset, dataset.indices(class_name), size, resolution, batch_size,
                                     num_workers):
            order.extend(int(i) for i in chunk)
            result = scorer.predict([item.model_image for item in batch])
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


def _with_drawn_references(method: ZeroShotMethod, references: ReferenceDraw, class_name: str) -> FewShotMethod:
    """``method`` with a memory of the class's drawn references, squashed to the model size like test images."""
    picks = draw_references(references.dataset, class_name, references.shots, references.seed)
    images = [to_protocol(references.dataset[int(i)], method.image_size).model_image for i in picks]
    memory = build_memory(method.backbone, images, method.taps, references.memory, class_name=class_name)
    return FewShotMethod(method, memory, references.fusion)


def average_reports(reports: Sequence[EvaluationReport]) -> EvaluationReport:
    """The per-class and mean metrics averaged over runs (the few-shot seeds), NaN-ignoring like the mean row.

    Raises:
        ValueError: no reports, or reports of different classes, metrics, AU-PRO variants or normalisations.
    """
    if not reports:
        raise ValueError("no reports to average")
    first = reports[0]

    def layout(report: EvaluationReport) -> tuple[Any, ...]:
        columns = {name: list(row) for name, row in report.per_class.items()}
        return columns, list(report.mean), report.aupro_variant, report.normalize

    for report in reports[1:]:
        if layout(report) != layout(first):
            raise ValueError("reports to average must cover the same classes, metrics and protocol")

    def mean_row(rows: list[dict[str, float]]) -> dict[str, float]:
        return {key: _nanmean([row[key] for row in rows]) for key in rows[0]}

    per_class = {name: mean_row([r.per_class[name] for r in reports]) for name in first.per_class}
    return EvaluationReport(per_class, mean_row([r.mean for r in reports]), first.aupro_variant, first.normalize)


def _nanmean(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return sum(finite) / len(finite) if finite else math.nan


def evaluate_few_shot(
    method: ZeroShotMethod,
    dataset: BaseDataset,
    reference_dataset: BaseDataset,
    shots: int,
    seeds: Sequence[int],
    *,
    memory: MemoryOptions | None = None,
    fusion: FusionOptions | None = None,
    **options: Any,
) -> tuple[EvaluationReport, list[EvaluationRun]]:
    """The papers' few-shot protocol: one evaluation per seed, each with its own draw of references.

    Args:
        method: a loaded method.
        dataset: the test data.
        reference_dataset: the train split the references are drawn from (good images per class).
        shots: references per class, >= 1.
        seeds: seeds of the draws (the papers average several).
        memory, fusion: memory and fusion options (None = defaults).
        **options: further arguments of :func:`evaluate_method`.

    Returns:
        The report averaged over seeds, and every seed's own run.
    """
    if not seeds:
        raise ValueError("few-shot evaluation needs at least one seed")
    runs = [
        evaluate_method(method, dataset, references=ReferenceDraw(
            reference_dataset, shots, seed, memory or MemoryOptions(), fusion or FusionOptions()), **options)
        for seed in seeds
    ]
    return average_reports([run.report for run in runs]), runs


def _stack(arrays: list[np.ndarray], class_name: str) -> np.ndarray:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"class {class_name!r} mixes image sizes {sorted(shapes)}; use resolution='protocol'")
    return np.stack(arrays)
