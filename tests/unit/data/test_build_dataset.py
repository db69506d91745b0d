"""``build_dataset`` spec parsing: every prefix, synthetic options, and clear errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zsad_core.data import (
    DatasetError,
    FolderDataset,
    MVTecDataset,
    SyntheticDataset,
    TextureGenerator,
    VisADataset,
    build_dataset,
)


def test_path_prefixes_build_the_matching_loader(mvtec_root, mvtec_layout, visa_root):
    root = mvtec_root(mvtec_layout)
    mvtec = build_dataset(f"mvtec:{root}", classes=["bottle"])
    assert isinstance(mvtec, MVTecDataset) and mvtec.class_names == ("bottle",) and len(mvtec) == 6
    assert isinstance(build_dataset(f"folder:{root}"), FolderDataset)
    visa = build_dataset(f"visa:{visa_root}")
    assert isinstance(visa, VisADataset) and len(visa) == 9


def test_synthetic_specs():
    default = build_dataset("synthetic")
    assert isinstance(default, SyntheticDataset) and len(default) == 4 * 8
    ds = build_dataset("synthetic:seed=3,classes=2,per_class=4,size=32")
    assert ds.class_names == ("woven", "wood") and len(ds) == 8 and ds[0].image.shape == (32, 32, 3)
    assert ds.seed == 3
    named = build_dataset("synthetic:classes=disc+stone,kinds=scratch,anomaly_ratio=1.0,per_class=2,size=32")
    assert named.class_names == ("disc", "stone")
    assert {sample.defect_type for sample in named} <= {"scratch", "stain"}  # stain = visibility fallback
    assert build_dataset("synthetic:seed=3,size=32", seed=4, per_class=1).seed == 4  # keywords override


def test_synthetic_path_spec_wraps_normal_images(tmp_path):
    folder = tmp_path / "normals=v2"  # an "=" in a path must not be read as an option
    folder.mkdir()
    image = TextureGenerator(32).generate("wood", 0)
    assert cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    ds = build_dataset(f"synthetic:{folder}", anomaly_ratio=1.0)
    assert ds.class_names == ("normals=v2",) and ds.labels.tolist() == [1]
    assert not np.array_equal(ds[0].image, image)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("imagenet:/data", {}, "unknown dataset spec"),
        ("/data/mvtec", {}, "unknown dataset spec"),
        ("mvtec:", {}, "names no path"),
        ("mvtec:/nonexistent", {"colour": "red"}, "colour"),
        ("synthetic:seed=x", {}, "seed"),
        ("synthetic:sead=3", {}, "sead"),
        ("synthetic:seed", {}, "key=value"),
        ("synthetic:size=32", {"split": "val"}, "split"),
    ],
)
def test_bad_specs_raise_dataset_error(spec, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        build_dataset(spec, **kwargs)
