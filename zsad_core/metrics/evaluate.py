"""Per-class evaluation and its macro mean, the protocol of the zero-shot papers' tables.

Every metric is computed on each class separately (all pixels of all test images of the class), then averaged
over classes with equal weight (15 classes on MVTec-AD, 12 on VisA). The pixels of a class are ranked once and
that ranking feeds all four pixel metrics; region labelling runs only when AUPRO is asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from zsad_core.metrics._arrays import as_binary, as_scores
from zsad_core.metrics.curves import ap_from_ranking, auroc_from_ranking, f1_max_from_ranking
from zsad_core.metrics.pro import AUPRO_VARIANTS, AuproVariant, aupro_from_ranking, region_weights
from zsad_core.metrics.ranking import BinaryRanking, rank_binary

Normalization = Literal["none", "per_class_minmax"]
NORMALIZATIONS: tuple[str, ...] = ("none", "per_class_minmax")

PIXEL_METRICS: tuple[str, ...] = ("pixel_auroc", "pixel_aupro", "pixel_ap", "pixel_f1_max")
IMAGE_METRICS: tuple[str, ...] = ("image_auroc", "image_ap", "image_f1_max")
# The papers' column order.
METRIC_KEYS: tuple[str, ...] = PIXEL_METRICS + IMAGE_METRICS

_TITLES = {
    "pixel_auroc": "pixel AUROC",
    "pixel_aupro": "PRO",
    "pixel_ap": "pixel AP",
    "pixel_f1_max": "pixel F1-max",
    "image_auroc": "image AUROC",
    "image_ap": "image AP",
    "image_f1_max": "image F1-max",
}
_MEAN_ROW = "mean"
# The metrics read straight off a ranking; AUPRO also needs the region weights and a variant.
_FROM_RANKING = {
    "pixel_auroc": auroc_from_ranking,
    "pixel_ap": ap_from_ranking,
    "pixel_f1_max": f1_max_from_ranking,
    "image_auroc": auroc_from_ranking,
    "image_ap": ap_from_ranking,
    "image_f1_max": f1_max_from_ranking,
}


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics per class and their macro mean, all in [0, 1] (NaN where undefined).

    Attributes:
        per_class: class name -> metric key -> value, classes in order of first appearance.
        mean: metric key -> NaN-ignoring mean over classes (NaN only if every class is NaN).
        aupro_variant: which AUPRO ``pixel_aupro`` holds, ``"exact"`` or ``"cflow"``.
        normalize: the normalisation applied before scoring, ``"none"`` or ``"per_class_minmax"``.
    """

    per_class: dict[str, dict[str, float]]
    mean: dict[str, float]
    aupro_variant: str = "exact"
    normalize: str = "none"

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``json.dumps``; NaN becomes None because JSON has no NaN."""

        def clean(row: dict[str, float]) -> dict[str, float | None]:
            return {key: None if math.isnan(value) else value for key, value in row.items()}

        return {
            "per_class": {name: clean(row) for name, row in self.per_class.items()},
            "mean": clean(self.mean),
            "aupro_variant": self.aupro_variant,
            "normalize": self.normalize,
        }

    def format_table(self) -> str:
        """The papers' table: a row per class and a "mean" row, values in % with one decimal, "-" for NaN."""
        keys = [key for key in METRIC_KEYS if key in self.mean]
        rows = [*self.per_class.items(), (_MEAN_ROW, self.mean)]
        name_width = max(len(name) for name in ["class", *(name for name, _ in rows)])
        titles = [_TITLES[key] for key in keys]
        lines = ["  ".join(["class".ljust(name_width), *titles])]
        for name, row in rows:
            cells = [_percent(row[key]).rjust(len(title)) for key, title in zip(keys, titles, strict=True)]
            lines.append("  ".join([name.ljust(name_width), *cells]))
        if "pixel_aupro" in keys:
            lines.append(f"PRO: {self.aupro_variant} AUPRO; maps normalised: {self.normalize}")
        return "\n".join(lines)


def evaluate(
    maps: ArrayLike | None,
    masks: ArrayLike | None,
    scores: ArrayLike | None,
    labels: ArrayLike | None,
    class_names: Sequence[str],
    aupro_variant: AuproVariant = "exact",
    metrics: Iterable[str] | None = None,
    normalize: Normalization = "none",
) -> EvaluationReport:
    """Compute the metrics of each class and their macro mean.

    Args:
        maps: ``(N, H, W)`` anomaly maps, or None for an image-only evaluation.
        masks: ``(N, H, W)`` ground truth (bool or 0/1), given exactly when ``maps`` is.
        scores: ``(N,)`` image scores, or None for a pixel-only evaluation.
        labels: ``(N,)`` image labels (0 normal, 1 anomalous), given exactly when ``scores`` is.
        class_names: ``N`` class names, one per image; images of a class need not be contiguous (contiguous
            ones are not copied).
        aupro_variant: ``"exact"`` (official MVTec AU-PRO) or ``"cflow"`` (the papers' ``cal_pro_score``).
        metrics: keys from ``METRIC_KEYS`` to compute; default: all that the given inputs allow.
        normalize: ``"per_class_minmax"`` rescales maps and scores to [0, 1] over each class's whole test set,
            as VCP-CLIP and CLIP-AD do before fusing score sources. Evaluation only, never for serving: it
            uses the statistics of the test set (transductive). Every metric here depends only on the ranking
            (the cflow grid is defined relative to min and max), so it changes values only through float
            rounding; it exists to reproduce pipelines that score normalised maps.

    Returns:
        The report; a metric undefined for a class (e.g. pixel metrics of a class without anomalous pixels)
        is NaN there and left out of the mean.

    Raises:
        ValueError: on missing inputs for a requested metric, unknown keys or options, or mismatched sizes.
    """
    if aupro_variant not in AUPRO_VARIANTS:
        raise ValueError(f"aupro_variant must be one of {AUPRO_VARIANTS}, got {aupro_variant!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    names = [str(name) for name in class_names]
    wanted = _resolve_metrics(metrics, maps is not None, scores is not None)
    pixel_keys = [key for key in PIXEL_METRICS if key in wanted]
    image_keys = [key for key in IMAGE_METRICS if key in wanted]
    pixel_data = _pixel_inputs(maps, masks, len(names)) if pixel_keys else None
    image_data = _image_inputs(scores, labels, len(names)) if image_keys else None
    per_class: dict[str, dict[str, float]] = {}
    for name, index in _group_by_class(names).items():
        row: dict[str, float] = {}
        if pixel_data is not None:
            class_maps, class_masks = (_take(a, index) for a in pixel_data)
            row |= _pixel_row(_normalized(class_maps, normalize), class_masks, pixel_keys, aupro_variant)
        if image_data is not None:
            class_scores, class_labels = (_take(a, index) for a in image_data)
            row |= _ranking_row(rank_binary(_normalized(class_scores, normalize), class_labels), image_keys)
        per_class[name] = {key: row[key] for key in METRIC_KEYS if key in row}
    mean = {key: _nanmean([row[key] for row in per_class.values()]) for key in METRIC_KEYS if key in wanted}
    return EvaluationReport(per_class=per_class, mean=mean, aupro_variant=aupro_variant, normalize=normalize)


def merge_reports(reports: Sequence[EvaluationReport]) -> EvaluationReport:
    """One report of several disjoint sets of classes (each evaluated on its own), with the macro mean recomputed.

    Why: a caller that scores a dataset class by class (:func:`zsad_core.evaluation.evaluate_method`) keeps only
    one class's maps in memory; since every metric is per class, merging the rows afterwards gives the report
    that :func:`evaluate` would give on the whole dataset.

    Raises:
        ValueError: no reports, a class in two reports, or reports of different AUPRO variants or normalisations.
    """
    if not reports:
        raise ValueError("no reports to merge")
    settings = {(report.aupro_variant, report.normalize) for report in reports}
    if len(settings) != 1:
        raise ValueError(f"reports of different settings cannot be merged: {sorted(settings)}")
    per_class: dict[str, dict[str, float]] = {}
    for report in reports:
        twice = sorted(set(per_class) & set(report.per_class))
        if twice:
            raise ValueError(f"classes {twice} are in more than one report")
        per_class |= report.per_class
    keys = [key for key in METRIC_KEYS if all(key in report.mean for report in reports)]
    mean = {key: _nanmean([row[key] for row in per_class.values()]) for key in keys}
    (aupro_variant, normalize), = settings
    return EvaluationReport(per_class={name: {key: row[key] for key in keys} for name, row in per_class.items()},
                            mean=mean, aupro_variant=aupro_variant, normalize=normalize)  # fmt: skip


def _resolve_metrics(metrics: Iterable[str] | None, has_maps: bool, has_scores: bool) -> set[str]:
    available = set(PIXEL_METRICS if has_maps else ()) | set(IMAGE_METRICS if has_scores else ())
    if metrics is None:
        if not available:
            raise ValueError("nothing to evaluate: give maps and masks, or scores and labels")
        return available
    wanted = set(metrics)
    unknown = wanted - set(METRIC_KEYS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; valid keys: {METRIC_KEYS}")
    missing = wanted - available
    if missing:
        raise ValueError(f"metrics {sorted(missing)} need inputs that were not given (maps or scores None)")
    return wanted


def _pixel_inputs(maps: ArrayLike, masks: ArrayLike | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if masks is None:
        raise ValueError("masks are required with maps")
    scores = as_scores(maps, 3, "maps")
    if scores.shape[0] != n:
        raise ValueError(f"maps has {scores.shape[0]} images but class_names has {n}")
    return scores, as_binary(masks, scores.shape, "masks")


def _image_inputs(scores: ArrayLike, labels: ArrayLike | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    if labels is None:
        raise ValueError("labels are required with scores")
    values = as_scores(scores, 1, "scores")
    if values.shape[0] != n:
        raise ValueError(f"scores has {values.shape[0]} images but class_names has {n}")
    return values, as_binary(labels, values.shape, "labels")


def _group_by_class(names: list[str]) -> dict[str, np.ndarray]:
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return {name: np.asarray(index) for name, index in groups.items()}


def _take(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    # A contiguous run of images is a view; copying a class's maps would cost ~120 MB at 518x518.
    if index[-1] - index[0] + 1 == index.size:
        return a[index[0] : index[-1] + 1]
    return a[index]


def _normalized(a: np.ndarray, normalize: Normalization) -> np.ndarray:
    if normalize == "none":
        return a
    lo, hi = a.min(), a.max()
    if hi == lo:
        return np.zeros_like(a)
    return (a - lo) / (hi - lo)


def _pixel_row(maps: np.ndarray, masks: np.ndarray, keys: list[str], variant: AuproVariant) -> dict[str, float]:
    weights = region_weights(masks) if "pixel_aupro" in keys else None
    ranking = rank_binary(maps, masks, pos_weights=weights)
    row = _ranking_row(ranking, keys)
    if "pixel_aupro" in keys:
        row["pixel_aupro"] = aupro_from_ranking(ranking, variant=variant)
    return row


def _ranking_row(ranking: BinaryRanking, keys: list[str]) -> dict[str, float]:
    return {key: _FROM_RANKING[key](ranking) for key in keys if key in _FROM_RANKING}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"
