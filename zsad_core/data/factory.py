"""``build_dataset("mvtec:/data/mvtec")``: one string names any dataset, for the CLI and for configs.

Spec grammar (the prefix is required, so a bare path is never guessed at):

- ``mvtec:PATH``, ``visa:PATH``, ``folder:PATH``: the loaders of :mod:`zsad_core.data.datasets`; ``mpdd:PATH``
  is MPDD, which ships in MVTec-AD's layout.
- ``btad``, ``ksdd2``, ``kolektorsdd``, ``dagm``, ``rsdd``, ``bsd``, ``gc10``, ``msd``, ``magnetic-tile``,
  ``road`` (``PATH`` each): the industrial benchmarks of :mod:`zsad_core.data.industrial`.
- ``isic``, ``clinicdb``, ``headct``, ``brainmri``, ``busi`` (``PATH`` each): :mod:`zsad_core.data.medical`.
- ``meta:PATH``: the official repositories' ``PATH/meta.json`` (:mod:`zsad_core.data.meta_json`).
- ``synthetic`` or ``synthetic:seed=3,classes=2,per_class=8,size=128``: procedural textures with synthetic
  defects (also ``anomaly_ratio=0.5`` and ``kinds=scratch+stain``; ``classes`` may be a count or
  ``wood+disc``).
- ``synthetic:PATH``: synthetic defects on the user's normal images in PATH (options as keyword arguments).

Keyword arguments go to the dataset's constructor and override options written in the spec.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from zsad_core.data.base import BaseDataset, DatasetError
from zsad_core.data.datasets import FolderDataset, MVTecDataset, VisADataset
from zsad_core.data.industrial import (
    BSDDataset,
    BTADDataset,
    CrackForestDataset,
    DAGMDataset,
    GC10DETDataset,
    KolektorSDDDataset,
    KSDD2Dataset,
    MagneticTileDataset,
    MSDDataset,
    RSDDDataset,
)
from zsad_core.data.medical import BrainMRIDataset, BUSIDataset, ClinicDBDataset, HeadCTDataset, ISICDataset
from zsad_core.data.meta_json import MetaJsonDataset
from zsad_core.data.synthetic import SyntheticDataset

_PATH_BUILDERS: dict[str, Callable[..., BaseDataset]] = {
    "mvtec": MVTecDataset,
    "visa": VisADataset,
    "folder": FolderDataset,
    "mpdd": MVTecDataset,
    "btad": BTADDataset,
    "ksdd2": KSDD2Dataset,
    "kolektorsdd": KolektorSDDDataset,
    "dagm": DAGMDataset,
    "rsdd": RSDDDataset,
    "bsd": BSDDataset,
    "gc10": GC10DETDataset,
    "msd": MSDDataset,
    "magnetic-tile": MagneticTileDataset,
    "road": CrackForestDataset,
    "isic": ISICDataset,
    "clinicdb": ClinicDBDataset,
    "headct": HeadCTDataset,
    "brainmri": BrainMRIDataset,
    "busi": BUSIDataset,
    "meta": MetaJsonDataset,
}
DATASET_NAMES: tuple[str, ...] = (*_PATH_BUILDERS, "synthetic")
_SYNTHETIC_OPTIONS: dict[str, Callable[[str], Any]] = {
    "seed": int,
    "classes": lambda text: int(text) if text.isdigit() else text.split("+"),
    "per_class": int,
    "size": int,
    "anomaly_ratio": float,
    "kinds": lambda text: text.split("+"),
    "split": str,
}
USAGE = (f"NAME:PATH with NAME one of {', '.join(_PATH_BUILDERS)}; synthetic, synthetic:key=value,... "
         "or synthetic:PATH")


def build_dataset(spec: str, **kwargs: Any) -> BaseDataset:
    """Build the dataset named by ``spec`` (see the module docstring for the grammar).

    Args:
        spec: e.g. ``"mvtec:/data/mvtec"``, ``"visa:/data/visa"``, ``"synthetic:seed=3,classes=2"``.
        **kwargs: constructor options such as ``classes=["bottle"]``, ``split="test"``, ``csv_path=...``.

    Returns:
        A lazily decoded dataset with ``len()``, iteration, indexing and ``class_names``.

    Raises:
        DatasetError: unknown prefix, missing path, malformed option, option the dataset does not take, or
            any error of the loader itself.
    """
    prefix, _, rest = spec.partition(":")
    prefix = prefix.strip().lower()
    if prefix == "synthetic":
        return _build_synthetic(rest.strip(), kwargs)
    if prefix not in _PATH_BUILDERS:
        raise DatasetError(f"unknown dataset spec {spec!r}; use one of {USAGE}")
    if not rest.strip():
        raise DatasetError(f"dataset spec {spec!r} names no path; write {prefix}:PATH")
    builder = _PATH_BUILDERS[prefix]
    _check_options(builder, kwargs, spec)
    return builder(os.path.expanduser(rest.strip()), **kwargs)


def _build_synthetic(rest: str, kwargs: dict[str, Any]) -> BaseDataset:
    if rest and _is_path(rest):
        _check_options(SyntheticDataset.from_normals, kwargs, f"synthetic:{rest}")
        return SyntheticDataset.from_normals(os.path.expanduser(rest), **kwargs)
    options = _parse_options(rest) if rest else {}
    options.update(kwargs)
    _check_options(SyntheticDataset, options, f"synthetic:{rest}")
    return SyntheticDataset(**options)


def _is_path(text: str) -> bool:
    """A folder if it has a path separator or exists; otherwise ``key=value`` options (so typos are reported)."""
    return "/" in text or os.sep in text or os.path.isdir(os.path.expanduser(text))


def _parse_options(text: str) -> dict[str, Any]:
    options = {}
    for item in text.split(","):
        key, equals, value = (part.strip() for part in item.partition("="))
        if key not in _SYNTHETIC_OPTIONS or not equals:
            raise DatasetError(f"synthetic option {item!r} is not key=value with a key in {list(_SYNTHETIC_OPTIONS)}")
        try:
            options[key] = _SYNTHETIC_OPTIONS[key](value)
        except ValueError as exc:
            raise DatasetError(f"synthetic option {key}={value!r} is malformed: {exc}") from exc
    return options


def _check_options(builder: Callable[..., Any], options: dict[str, Any], spec: str) -> None:
    signature = inspect.signature(builder)
    accepted = [name for name, param in signature.parameters.items() if param.kind is param.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(f"{spec}: options {unknown} are not accepted; accepted: {accepted}")
