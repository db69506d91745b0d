"""``zsad reproduce``: the papers' protocol on every dataset under a data root, next to the papers' numbers.

The protocol of the zero-shot papers: a method that learns is trained on one auxiliary dataset and evaluated
on the others (VisA trains the weights evaluated everywhere else, MVTec-AD those evaluated on VisA); each
method runs at its paper's input size (its config's ``image_size``), images are squashed to S x S, and every
metric is computed per class and macro-averaged (:func:`zsad_core.evaluation.evaluate_method`). The measured
means are printed beside the numbers in ``paper_numbers.json``, which cites where each number is printed.

Datasets are found, not configured: every sub-folder ``DIR/<kind>`` or ``DIR/<kind>_<anything>`` whose kind is
a prefix :func:`zsad_core.data.build_dataset` accepts is loaded with that prefix, so new dataset adapters are
picked up without changes here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zsad_core.data import BaseDataset, build_dataset
from zsad_core.data.base import DatasetError
from zsad_core.errors import ZsadError
from zsad_core.evaluation import evaluate_method
from zsad_core.methods import get_method_spec, load_method
from zsad_core.metrics.evaluate import METRIC_KEYS
from zsad_core.training import TrainingOptions, train_method

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.json")
# Which auxiliary set trains the weights evaluated on a dataset: MVTec-AD for VisA, VisA for everything else.
PAPER_AUXILIARY: dict[str, str] = {"visa": "mvtec"}
DEFAULT_AUXILIARY = "visa"
NO_NUMBER = "no paper number"


class ReproduceError(ZsadError):
    """Nothing can be reproduced: no dataset found, or none left to evaluate; the message says what is missing."""

    reason = "nothing_to_reproduce"


@dataclass
class ReproductionReport:
    """Measured means per dataset beside the papers' numbers.

    Attributes:
        method: the method reproduced.
        measured: dataset -> metric key -> measured macro mean in % (None where undefined).
        paper: dataset -> metric key -> the paper's number in %.
        citations: dataset -> where the paper's numbers are printed.
        trained_on: dataset -> auxiliary dataset its weights were trained on ("weights" for given weights).
        skipped: dataset or folder -> why it was not evaluated.
    """

    method: str
    measured: dict[str, dict[str, float | None]] = field(default_factory=dict)
    paper: dict[str, dict[str, float]] = field(default_factory=dict)
    citations: dict[str, str] = field(default_factory=dict)
    trained_on: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per dataset and metric: measured, paper (or None) and the difference in points."""
        rows = []
        for dataset, metrics in self.measured.items():
            for key in (k for k in METRIC_KEYS if k in metrics):
                measured, paper = metrics[key], self.paper.get(dataset, {}).get(key)
                delta = None if measured is None or paper is None else round(measured - paper, 1)
                rows.append({"dataset": dataset, "metric": key, "measured": measured, "paper": paper, "delta": delta})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON report."""
        return {"method": self.method, "rows": self.rows(), "citations": self.citations,
                "trained_on": self.trained_on, "skipped": self.skipped}

    def format_table(self) -> str:
        """Measured next to paper with the difference in points; "no paper number" where none is cited."""
        header = f"{'dataset':<14}{'metric':<14}{'measured':>9}  {'paper':>15}  {'diff':>6}"
        lines = [f"{self.method}: measured vs paper (%, per-class macro means)", header]
        for row in self.rows():
            measured = "-" if row["measured"] is None else f"{row['measured']:.1f}"
            paper = NO_NUMBER if row["paper"] is None else f"{row['paper']:.1f}"
            delta = "" if row["delta"] is None else f"{row['delta']:+.1f}"
            lines.append(f"{row['dataset']:<14}{row['metric']:<14}{measured:>9}  {paper:>15}  {delta:>6}")
        lines += [f"[{name}] trained on {source}" for name, source in self.trained_on.items()]
        lines += [f"[{name}] {text}" for name, text in self.citations.items()]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(lines)


def paper_numbers(method: str, path: Path = PAPER_NUMBERS) -> dict[str, dict[str, Any]]:
    """dataset -> ``{"citation": str, "metrics": {key: percent}}`` of ``method`` (empty when none is cited)."""
    return json.loads(path.read_text()).get(method, {})


def discover_datasets(data_root: str | Path, names: Sequence[str] | None = None
                      ) -> tuple[dict[str, BaseDataset], dict[str, str]]:
    """Load every dataset folder under ``data_root``; returns the datasets and the folders skipped, with why.

    Args:
        data_root: folder holding one sub-folder per dataset (``mvtec``, ``visa``, ``synthetic_a``, ...).
        names: only these folder names (all when None); a requested name that is absent is reported.
    """
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise ReproduceError(f"data root {root} is not a folder; it must hold one sub-folder per dataset "
                             "(e.g. mvtec/, visa/)")
    folders = {p.name: p for p in sorted(root.iterdir()) if p.is_dir()}
    wanted = list(names) if names else list(folders)
    found: dict[str, BaseDataset] = {}
    skipped = {name: f"no folder {root / name}" for name in wanted if name not in folders}
    for name in (n for n in wanted if n in folders):
        kind = name.split("_")[0].split("-")[0].lower()
        try:
            found[name] = build_dataset(f"{kind}:{folders[name]}")
        except DatasetError as exc:
            skipped[name] = str(exc)
    return found, skipped


def auxiliary_for(target: str, available: Sequence[str]) -> str | None:
    """The auxiliary set whose trained weights the papers evaluate on ``target``, or another one found here."""
    kind = target.split("_")[0].split("-")[0].lower()
    preferred = PAPER_AUXILIARY.get(kind, DEFAULT_AUXILIARY)
    others = [name for name in available if name != target]
    exact = [name for name in others if name.split("_")[0].split("-")[0].lower() == preferred]
    return (exact or others or [None])[0]


def _percent(value: float) -> float | None:
    return None if math.isnan(value) else round(100.0 * value, 1)


def reproduce(
    method: str,
    data_root: str | Path,
    *,
    weights: str | None = None,
    datasets: Sequence[str] | None = None,
    load_options: Mapping[str, Any] | None = None,
    training: TrainingOptions | None = None,
    batch_size: int = 8,
    log: Callable[[str], None] = lambda message: None,
) -> ReproductionReport:
    """Run the papers' protocol for ``method`` on the datasets under ``data_root``.

    Args:
        method: a registered method.
        data_root: see :func:`discover_datasets`.
        weights: a prompt artifact or ``official:FILE`` used for every dataset instead of training.
        datasets: only these dataset folders.
        load_options: more :func:`zsad_core.load_method` arguments (backbone, backbone weights, device, ...).
        training: loop settings of the auxiliary training (the method's official ones when None).
        batch_size: images per forward during evaluation.
        log: progress messages.

    Raises:
        ReproduceError: no dataset was found, or a learnable method has no weights and no second dataset.
    """
    found, skipped = discover_datasets(data_root, datasets)
    if not found:
        raise ReproduceError(f"no dataset found under {data_root}: "
                             + ("; ".join(f"{k}: {v}" for k, v in skipped.items()) or "it has no sub-folders")
                             + ". Put each dataset in a sub-folder named after its kind (mvtec/, visa/, ...).")
    options = dict(load_options or {})
    learns = get_method_spec(method).method_cls.learnable and weights is None
    report = ReproductionReport(method, skipped=dict(skipped))
    cited = paper_numbers(method)
    trained: dict[str, Any] = {}
    for target, dataset in found.items():
        if learns:
            source = auxiliary_for(target, list(found))
            if source is None:
                report.skipped[target] = ("needs an auxiliary dataset to train on (a second dataset folder) or "
                                          "--weights")
                continue
            if source not in trained:
                log(f"training {method} on {source}")
                trained[source] = load_method(method, **options)
                train_method(trained[source], found[source], training)
            model = trained[source]
        else:
            source = "weights" if weights else "training-free"
            model = trained.setdefault(source, load_method(method, weights=weights, **options))
        log(f"evaluating {method} on {target}")
        run = evaluate_method(model, dataset, batch_size=batch_size)
        report.measured[target] = {key: _percent(value) for key, value in run.report.mean.items()}
        report.trained_on[target] = source
        kind = target.split("_")[0].split("-")[0].lower()
        if kind in cited:
            report.paper[target] = dict(cited[kind]["metrics"])
            report.citations[target] = cited[kind]["citation"]
    if not report.measured:
        raise ReproduceError("nothing was evaluated: " + "; ".join(f"{k}: {v}" for k, v in report.skipped.items()))
    return report
