"""Datasets of zsad_core: MVTec-AD, VisA, the other industrial and medical benchmarks of the papers, the
official ``meta.json`` splits, a generic folder layout, synthetic auxiliary data, and the papers' evaluation
protocol (S x S squash, mask resize and threshold)."""

from zsad_core.data.base import BaseDataset, DatasetError, Entry, FileDataset
from zsad_core.data.datasets import FolderDataset, MVTecDataset, VisADataset
from zsad_core.data.factory import DATASET_NAMES, build_dataset
from zsad_core.data.meta_json import MetaJsonDataset, write_meta_json
from zsad_core.data.noise import fractal_noise, perlin_noise
from zsad_core.data.protocol import ProtocolSample, protocol_samples, resize_mask, to_protocol
from zsad_core.data.sample import GOOD, Sample
from zsad_core.data.synthetic import (
    FAMILIES,
    KINDS,
    Anomaly,
    AnomalySynthesizer,
    SyntheticDataset,
    TextureGenerator,
)

__all__ = [
    "DATASET_NAMES",
    "FAMILIES",
    "GOOD",
    "KINDS",
    "Anomaly",
    "AnomalySynthesizer",
    "BaseDataset",
    "DatasetError",
    "Entry",
    "FileDataset",
    "FolderDataset",
    "MVTecDataset",
    "MetaJsonDataset",
    "ProtocolSample",
    "Sample",
    "SyntheticDataset",
    "TextureGenerator",
    "VisADataset",
    "build_dataset",
    "fractal_noise",
    "perlin_noise",
    "protocol_samples",
    "resize_mask",
    "to_protocol",
    "write_meta_json",
]
