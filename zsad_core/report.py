"""The evaluation output people look at: ROC, PR and PRO curves, score histograms, overlays, one HTML page.

Why curves besides the table: two methods with the same pixel AUROC can differ where it matters (the low-FPR
end of the PRO curve, the precision at the recall an inspector needs), and a histogram shows at once whether
normal and anomalous scores separate or merely shift. The curves come from the same
:class:`~zsad_core.metrics.ranking.BinaryRanking` as the metrics, so the area under the drawn ROC curve *is*
the reported AUROC (and likewise AP and exact AU-PRO), not a second estimate.

Plain functions over :class:`~zsad_core.evaluation.EvaluationRun`, drawn with OpenCV (no plotting library),
so ``zsad eval`` and ``zsad reproduce`` write the same files. The HTML page references its PNGs by relative
path: the output folder can be moved or archived as a whole.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from zsad_core.imageio import encode_png
from zsad_core.metrics.class_curves import ClassCurves, Curve
from zsad_core.metrics.evaluate import _TITLES, METRIC_KEYS, EvaluationReport
from zsad_core.visualize import overlay, select_extremes

if TYPE_CHECKING:
    from zsad_core.data import BaseDataset
    from zsad_core.evaluation import EvaluationRun
    from zsad_core.methods import ZeroShotMethod

PLOT_SIZE = (480, 400)  # width, height of every chart
PANEL_SIDE = 224  # side of each image in an overlay strip
HISTOGRAM_BINS = 30
_NORMAL_COLOUR = (70, 130, 40)  # RGB
_ANOMALY_COLOUR = (200, 40, 40)
_LINE_COLOURS = ((31, 119, 180), (214, 39, 40))


# ---------------------------------------------------------------------------------------------------- drawing


class _Axes:
    """A white chart with a frame from (x0, y0) to (x1, y1) in data units, drawn in RGB."""

    def __init__(self, title: str, x_label: str, y_label: str, x_range: tuple[float, float] = (0.0, 1.0),
                 y_range: tuple[float, float] = (0.0, 1.0)):
        width, height = PLOT_SIZE
        self.image = np.full((height, width, 3), 255, np.uint8)
        self.left, self.right, self.top, self.bottom = 56, width - 16, 30, height - 46
        self.x_range, self.y_range = x_range, y_range
        _text(self.image, title, (self.left, 20), 0.5)
        _text(self.image, x_label, ((self.left + self.right) // 2 - 4 * len(x_label), height - 8), 0.45)
        _text(self.image, y_label, (4, self.top - 10), 0.45)
        cv2.rectangle(self.image, (self.left, self.top), (self.right, self.bottom), (0, 0, 0), 1)
        for fraction in np.linspace(0.0, 1.0, 5):
            x_value = x_range[0] + fraction * (x_range[1] - x_range[0])
            y_value = y_range[0] + fraction * (y_range[1] - y_range[0])
            px, py = self.pixel(x_value, y_value)
            cv2.line(self.image, (px, self.bottom), (px, self.bottom + 4), (0, 0, 0), 1)
            cv2.line(self.image, (self.left - 4, py), (self.left, py), (0, 0, 0), 1)
            _text(self.image, _tick(x_value), (px - 12, self.bottom + 18), 0.4)
            _text(self.image, _tick(y_value), (4, py + 4), 0.4)

    def pixel(self, x: float | np.ndarray, y: float | np.ndarray) -> tuple:
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        px = self.left + (np.asarray(x) - x0) / max(x1 - x0, 1e-12) * (self.right - self.left)
        py = self.bottom - (np.asarray(y) - y0) / max(y1 - y0, 1e-12) * (self.bottom - self.top)
        return _round(px), _round(py)

    def line(self, curve: Curve, colour: tuple[int, int, int], *, steps: bool = False) -> None:
        x, y = curve.x, curve.y
        if steps:  # precision holds from one recall to the next, as AP sums it
            x = np.repeat(np.concatenate([[0.0], x]), 2)[1:-1]
            y = np.repeat(y, 2)
        px, py = self.pixel(x, y)
        points = np.stack([np.atleast_1d(px), np.atleast_1d(py)], axis=1).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(self.image, [points], isClosed=False, color=colour, thickness=2, lineType=cv2.LINE_AA)

    def legend(self, entries: Sequence[tuple[str, tuple[int, int, int]]]) -> None:
        for row, (label, colour) in enumerate(entries):
            y = self.top + 18 + 18 * row
            cv2.line(self.image, (self.right - 170, y - 4), (self.right - 150, y - 4), colour, 3)
            _text(self.image, label, (self.right - 145, y), 0.42)


def _round(values: np.ndarray) -> int | np.ndarray:
    rounded = np.rint(values).astype(np.int64)
    return int(rounded) if rounded.ndim == 0 else rounded


def _tick(value: float) -> str:
    return f"{value:.2f}" if abs(value) < 100 else f"{value:.3g}"


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _write_png(path: Path, image_rgb: np.ndarray) -> str:
    path.write_bytes(encode_png(image_rgb))
    return path.name


def curve_chart(title: str, x_label: str, y_label: str,
                curves: Sequence[tuple[str, Curve]], *, steps: bool = False) -> np.ndarray:
    """An ``(H, W, 3)`` RGB chart of up to two named curves on [0, 1] x [0, 1]."""
    axes = _Axes(title, x_label, y_label)
    for (_, curve), colour in zip(curves, _LINE_COLOURS, strict=False):
        axes.line(curve, colour, steps=steps)
    axes.legend([(name, colour) for (name, _), colour in zip(curves, _LINE_COLOURS, strict=False)])
    return axes.image


def histogram_chart(title: str, normal: np.ndarray, anomalous: np.ndarray, bins: int = HISTOGRAM_BINS
                    ) -> np.ndarray:
    """Image-score histograms of normal and anomalous images on shared bins, as outlined step lines."""
    values = np.concatenate([normal, anomalous]).astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if high <= low:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = [np.histogram(part, edges)[0] for part in (normal, anomalous)]
    top = max(1, *(int(c.max()) if c.size else 0 for c in counts))
    axes = _Axes(title, "image score", "images", (low, high), (0.0, float(top)))
    for count, colour in zip(counts, (_NORMAL_COLOUR, _ANOMALY_COLOUR), strict=True):
        axes.line(Curve(np.repeat(edges, 2)[1:-1], np.repeat(count, 2).astype(np.float64)), colour)
    axes.legend([(f"normal ({len(normal)})", _NORMAL_COLOUR), (f"anomalous ({len(anomalous)})", _ANOMALY_COLOUR)])
    return axes.image


def overlay_strip(image: np.ndarray, mask: np.ndarray | None, anomaly_map: np.ndarray, caption: str) -> np.ndarray:
    """Original, ground truth and map over the image, side by side, with a caption line above."""
    side = PANEL_SIDE
    original = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    truth = np.zeros((side, side, 3), np.uint8)
    if mask is not None:
        resized = cv2.resize(mask.astype(np.uint8) * 255, (side, side), interpolation=cv2.INTER_NEAREST)
        truth[resized > 0] = 255
    else:
        _text(truth, "no mask", (side // 2 - 32, side // 2), 0.5)
        truth[...] = 255 - truth
    heat = overlay(original, anomaly_map)
    strip = np.full((side + 24, 3 * side + 8, 3), 255, np.uint8)
    for column, panel in enumerate((original, truth, heat)):
        strip[24:, column * (side + 4) : column * (side + 4) + side] = panel
    _text(strip, caption, (4, 17), 0.45)
    return strip


# ---------------------------------------------------------------------------------------------------- report


def write_report(
    out_dir: str | os.PathLike,
    run: EvaluationRun,
    *,
    title: str,
    method: ZeroShotMethod | None = None,
    dataset: BaseDataset | None = None,
    per_kind: int = 3,
) -> Path:
    """Write the curves, histograms, overlays and ``index.html`` of an evaluation into ``out_dir``.

    Args:
        out_dir: created if missing; files are named per class (``<class>_roc.png`` ...).
        run: the evaluation; ``run.curves`` must hold every class (``evaluate_method(..., curves=True)``).
        title: the page's heading (method and dataset).
        method, dataset: to redraw the best and worst cases (the run keeps scores, not maps); without them
            the page has no overlays.
        per_kind: cases per kind (false alarms, misses, clear anomalies, clear normals).

    Returns:
        The path of ``index.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if set(run.curves) != set(run.report.per_class):
        raise ValueError("run has no curves for some classes; evaluate with curves=True")
    sections = [f"<h1>{html.escape(title)}</h1>", _table_html(run.report)]
    for index, (class_name, curves) in enumerate(run.curves.items()):
        stem = f"{index:02d}_{_safe(class_name)}"
        files = _class_charts(out, stem, class_name, curves)
        images = "".join(f'<img src="{name}" alt="{html.escape(name)}">' for name in files)
        sections.append(f"<h2>{html.escape(class_name)}</h2><div class=row>{images}</div>")
    if method is not None and dataset is not None and per_kind > 0:
        sections.append(_overlays_html(out, run, _method_predictor(method, dataset, run), per_kind))
    page = ("<!doctype html><html><head><meta charset=utf-8><title>" + html.escape(title) + "</title><style>"
            "body{font-family:sans-serif;margin:20px}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
            ".row img{margin:4px;border:1px solid #ddd}</style></head><body>"
            + "\n".join(sections) + "</body></html>\n")
    index_path = out / "index.html"
    index_path.write_text(page, encoding="utf-8")
    return index_path


def _class_charts(out: Path, stem: str, class_name: str, curves: ClassCurves) -> list[str]:
    files = []
    roc = [(name, c) for name, c in (("pixel", curves.pixel_roc), ("image", curves.image_roc)) if c is not None]
    if roc:
        files.append(_write_png(out / f"{stem}_roc.png", curve_chart(f"ROC - {class_name}", "FPR", "TPR", roc)))
    pr = [(name, c) for name, c in (("pixel", curves.pixel_pr), ("image", curves.image_pr)) if c is not None]
    if pr:
        chart = curve_chart(f"PR - {class_name}", "recall", "precision", pr, steps=True)
        files.append(_write_png(out / f"{stem}_pr.png", chart))
    if curves.pixel_pro is not None:
        chart = curve_chart(f"PRO - {class_name}", "FPR", "PRO", [("pixel", curves.pixel_pro)])
        files.append(_write_png(out / f"{stem}_pro.png", chart))
    chart = histogram_chart(f"scores - {class_name}", curves.normal_scores, curves.anomalous_scores)
    files.append(_write_png(out / f"{stem}_hist.png", chart))
    return files


def _table_html(report: EvaluationReport) -> str:
    keys = [key for key in METRIC_KEYS if key in report.mean]
    head = "".join(f"<th>{_TITLES[key]}</th>" for key in keys)
    rows = []
    for name, row in [*report.per_class.items(), ("mean", report.mean)]:
        cells = "".join(f"<td>{'-' if math.isnan(row[key]) else f'{100 * row[key]:.1f}'}</td>" for key in keys)
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}</tr>")
    note = f"<p>PRO: {report.aupro_variant} AU-PRO; normalisation: {report.normalize}</p>"
    return f"<table><tr><th>class</th>{head}</tr>{''.join(rows)}</table>{note}"


def _overlays_html(out: Path, run: EvaluationRun, predict_map: Callable[[int], tuple], per_kind: int) -> str:
    extremes = select_extremes(run.scores, run.labels, per_kind)
    parts = []
    for kind, picks in (("worst", extremes.worst), ("best", extremes.best)):
        images = []
        for rank, position in enumerate(picks):
            image, mask, anomaly_map = predict_map(int(position))
            label = "anomalous" if run.labels[position] else "normal"
            caption = f"{run.class_names[position]} | {label} | score {run.scores[position]:.4f}"
            name = f"{kind}_{rank:02d}_{_safe(run.class_names[position])}.png"
            _write_png(out / name, overlay_strip(image, mask, anomaly_map, caption))
            images.append(f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>'
                          f"{html.escape(caption)} | {html.escape(os.path.basename(run.paths[position]))}"
                          "</figcaption></figure>")
        parts.append(f"<h2>{kind} cases (original, ground truth, map)</h2><div class=row>{''.join(images)}</div>")
    return "".join(parts)


def _method_predictor(method: ZeroShotMethod, dataset: BaseDataset, run: EvaluationRun) -> Callable[[int], tuple]:
    """The model image, its mask at the model size and the map of the sample at a run position; the run keeps
    scores only, so the few cases shown are predicted again."""
    from zsad_core.data import to_protocol
    from zsad_core.evaluation import domain_of

    def predict(position: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        class_name = run.class_names[position]
        item = to_protocol(dataset[int(run.indices[position])], method.image_size)
        method.setup(class_name, domain_of(class_name))
        return item.model_image, item.mask, method.predict([item.model_image]).maps[0].cpu().numpy()

    return predict


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)
