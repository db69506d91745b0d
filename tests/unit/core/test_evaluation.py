"""evaluate_method scores one class at a time: the same report as one evaluation of the whole dataset, with only
one class's maps alive at any moment."""

from __future__ import annotations

import gc
import weakref
from collections import Counter
from typing import Any

import numpy as np
import pytest

from zsad_core import evaluation
from zsad_core.data import SyntheticDataset, to_protocol
from zsad_core.evaluation import domain_of, evaluate_method
from zsad_core.methods import load_method
from zsad_core.metrics import evaluate


class CountingDataset:
    """A dataset that counts, per class, the samples it has handed out."""

    def __init__(self, inner: SyntheticDataset) -> None:
        self.inner = inner
        self.fetched: Counter[str] = Counter()

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.inner.class_names

    def indices(self, class_name: str) -> np.ndarray:
        return self.inner.indices(class_name)

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> Any:
        sample = self.inner[index]
        self.fetched[sample.class_name] += 1
        return sample


def _reference_inputs(method: Any, dataset: SyntheticDataset) -> tuple[Any, ...]:
    """The reference's inputs: every class's maps kept, for one evaluation over the concatenated dataset."""
    maps, masks, scores, labels, names = [], [], [], [], []
    for class_name in dataset.class_names:
        method.setup(class_name, domain_of(class_name))
        samples = [to_protocol(dataset[int(i)], method.image_size) for i in dataset.indices(class_name)]
        result = method.predict([sample.model_image for sample in samples])
        maps += list(result.maps.numpy())
        masks += [sample.mask for sample in samples]
        scores += result.scores.tolist()
        labels += [sample.label for sample in samples]
        names += [class_name] * len(samples)
    return np.stack(maps), np.stack(masks), np.asarray(scores, dtype=np.float32), np.asarray(labels), names


@pytest.mark.parametrize("normalize", ["none", "per_class_minmax"])
def test_class_by_class_gives_the_whole_dataset_report(tiny_backbone, normalize: str) -> None:
    dataset = SyntheticDataset(seed=3, classes=3, per_class=4, size=64)
    method = load_method("winclip", backbone=tiny_backbone)
    run = evaluate_method(method, dataset, batch_size=8, normalize=normalize)
    reference = evaluate(*_reference_inputs(method, dataset), normalize=normalize)

    assert list(run.report.per_class) == list(dataset.class_names)
    for name, row in reference.per_class.items():
        assert run.report.per_class[name] == pytest.approx(row, rel=1e-6, nan_ok=True)
    assert run.report.mean == pytest.approx(reference.mean, rel=1e-6, nan_ok=True)
    assert run.report.normalize == normalize and len(run.scores) == len(dataset)


def test_only_one_class_of_maps_is_alive_at_a_time(tiny_backbone, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset = CountingDataset(SyntheticDataset(seed=3, classes=4, per_class=3, size=64))
    real_evaluate = evaluation.evaluate
    earlier_maps: list[weakref.ref[np.ndarray]] = []
    seen: list[tuple[set[str], dict[str, int], int]] = []

    def spy(maps: np.ndarray, masks: np.ndarray, scores: np.ndarray, labels: np.ndarray, class_names: list[str],
            **options: Any) -> Any:  # fmt: skip
        gc.collect()
        alive = sum(ref() is not None for ref in earlier_maps)
        seen.append((set(class_names), dict(dataset.fetched), alive))
        earlier_maps.append(weakref.ref(maps))
        return real_evaluate(maps, masks, scores, labels, class_names, **options)

    monkeypatch.setattr(evaluation, "evaluate", spy)
    evaluate_method(load_method("winclip", backbone=tiny_backbone), dataset, batch_size=2)

    names = dataset.class_names
    # One metric call per class, each made when exactly the classes so far have been read, and each after the
    # maps of every earlier class were freed.
    assert seen == [({name}, {earlier: 3 for earlier in names[: k + 1]}, 0) for k, name in enumerate(names)]
