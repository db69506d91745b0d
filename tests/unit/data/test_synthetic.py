"""Synthetic auxiliary data: determinism, exact masks for every defect kind, and the dataset wrapper."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from zsad_core.data import (
    FAMILIES,
    KINDS,
    AnomalySynthesizer,
    DatasetError,
    SyntheticDataset,
    TextureGenerator,
    build_dataset,
    fractal_noise,
    perlin_noise,
)

SIZE = 48


def changed_pixels(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    return (before != after).any(axis=2)


# ---------------------------------------------------------------------------------------------- noise


def test_perlin_noise_is_smooth_seeded_and_zero_on_the_lattice():
    noise = perlin_noise((40, 60), (4, 6), np.random.default_rng(0))
    assert noise.shape == (40, 60) and noise.dtype == np.float32
    assert np.abs(noise).max() <= 1.0 + 1e-5 and noise.std() > 0.05
    np.testing.assert_allclose(noise[::10, ::10], 0.0, atol=1e-6)  # every 10th pixel is a lattice corner
    np.testing.assert_array_equal(noise, perlin_noise((40, 60), (4, 6), np.random.default_rng(0)))
    assert np.abs(np.diff(noise, axis=1)).max() < 0.5  # no jumps between neighbours
    fractal = fractal_noise((33, 17), 3, np.random.default_rng(1))  # sizes need not divide the grid
    assert fractal.shape == (33, 17) and np.isfinite(fractal).all()


# -------------------------------------------------------------------------------------------- textures


@pytest.mark.parametrize("family", FAMILIES)
def test_texture_families_are_deterministic_and_varied(family):
    textures = TextureGenerator(SIZE)
    image, foreground = textures.generate_with_foreground(family, np.random.default_rng(5))
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert image.std() > 5  # a texture, not a flat colour
    np.testing.assert_array_equal(image, textures.generate(family, 5))
    assert not np.array_equal(image, textures.generate(family, 6))
    assert textures.generate(family, 5, shape=(20, 36)).shape == (20, 36, 3)
    if family == "disc":
        assert 0.1 < foreground.mean() < 0.7
    else:
        assert foreground is None


def test_texture_generator_refuses_unknown_family():
    with pytest.raises(ValueError, match="families"):
        TextureGenerator(SIZE).generate("marble", 0)


# ---------------------------------------------------------------------------------------------- defects


def normal_images() -> list[np.ndarray]:
    textures = TextureGenerator(SIZE)
    flat = np.full((SIZE, SIZE + 10, 3), 128, np.uint8)  # non-square and flat: cut-paste changes nothing
    return [textures.generate("stone", 1), textures.generate("disc", 2, shape=(40, 56)), flat]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_exactly_the_masked_pixels(kind):
    synthesizer = AnomalySynthesizer()
    for image_index, image in enumerate(normal_images()):
        for seed in range(3):
            before = image.copy()
            anomaly = synthesizer(image, np.random.default_rng(seed), kind=kind)
            np.testing.assert_array_equal(image, before)  # input untouched
            assert anomaly.image.dtype == np.uint8 and anomaly.image.shape == image.shape
            assert anomaly.mask.dtype == np.bool_ and anomaly.mask.any()
            np.testing.assert_array_equal(anomaly.mask, changed_pixels(image, anomaly.image))
            np.testing.assert_array_equal(anomaly.image[~anomaly.mask], image[~anomaly.mask])
            # A flat image defeats cut-paste; the synthesizer then falls back to a visible stain.
            expected = {kind, "stain"} if image_index == 2 else {kind}
            assert anomaly.kind in expected


def test_defects_are_reproducible_and_seed_dependent():
    image = normal_images()[0]
    synthesizer = AnomalySynthesizer()
    first, again = synthesizer(image, 11), synthesizer(image, 11)
    np.testing.assert_array_equal(first.image, again.image)
    np.testing.assert_array_equal(first.mask, again.mask)
    assert first.kind == again.kind
    assert not np.array_equal(first.image, synthesizer(image, 12).image)


def test_region_keeps_defects_on_the_object_and_fallback_stays_exact():
    image, foreground = TextureGenerator(SIZE).generate_with_foreground("disc", 3)
    synthesizer = AnomalySynthesizer()
    for seed in range(4):
        anomaly = synthesizer(image, seed, region=foreground)
        assert anomaly.mask.any() and not (anomaly.mask & ~foreground).any()
    strict = AnomalySynthesizer(["scratch"], min_contrast=1e9)  # nothing passes: forced fallback
    anomaly = strict(image, 0, region=foreground)
    assert anomaly.kind == "stain" and not (anomaly.mask & ~foreground).any()
    np.testing.assert_array_equal(anomaly.mask, changed_pixels(image, anomaly.image))


def test_blend_sources_and_argument_checks():
    image = normal_images()[0]
    source = np.zeros((10, 10, 3), np.uint8)
    anomaly = AnomalySynthesizer(["perlin"], blend_sources=[source])(image, 4)
    np.testing.assert_array_equal(anomaly.mask, changed_pixels(image, anomaly.image))
    with pytest.raises(ValueError, match="kinds"):
        AnomalySynthesizer(["dent"])
    with pytest.raises(ValueError, match="at least"):
        AnomalySynthesizer()(np.zeros((8, 8, 3), np.uint8), 0)
    with pytest.raises(ValueError, match="region"):
        AnomalySynthesizer()(image, 0, region=np.zeros(image.shape[:2], bool))


# ---------------------------------------------------------------------------------------------- dataset


def test_synthetic_dataset_labels_masks_and_classes():
    ds = SyntheticDataset(seed=3, classes=2, per_class=6, size=32)
    assert len(ds) == 12 and ds.class_names == ("woven", "wood")
    assert ds.labels.reshape(2, 6).sum(axis=1).tolist() == [3, 3]
    for sample, label in zip(ds, ds.labels, strict=True):
        assert sample.label == label and sample.image.shape == (32, 32, 3)
        assert sample.mask.any() == bool(label)
        assert sample.defect_type in (KINDS if label else ("good",))
        assert sample.path.startswith(f"synthetic://{sample.class_name}/")


def test_synthetic_dataset_is_byte_identical_for_a_seed_in_any_order():
    first = SyntheticDataset(seed=7, classes=["stone", "disc"], per_class=4, size=32)
    second = SyntheticDataset(seed=7, classes=["stone", "disc"], per_class=4, size=32)
    backwards = [second[index] for index in reversed(range(len(second)))][::-1]
    for a, b in zip(first, backwards, strict=True):
        assert a.image.tobytes() == b.image.tobytes() and a.mask.tobytes() == b.mask.tobytes()
        assert a.defect_type == b.defect_type
    other = SyntheticDataset(seed=8, classes=["stone", "disc"], per_class=4, size=32)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(first, other, strict=True))


def test_synthetic_dataset_argument_checks():
    with pytest.raises(DatasetError, match="families"):
        SyntheticDataset(classes=["velvet"])
    with pytest.raises(DatasetError, match="classes"):
        SyntheticDataset(classes=9)
    with pytest.raises(DatasetError, match="anomaly_ratio"):
        SyntheticDataset(anomaly_ratio=1.5)
    with pytest.raises(DatasetError, match="seed"):
        SyntheticDataset(seed=-1)
    assert SyntheticDataset(per_class=3, anomaly_ratio=0.0, size=16).labels.sum() == 0


def write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_from_normals_single_folder_and_class_folders(tmp_path):
    textures = TextureGenerator(SIZE)
    for index in range(4):
        write_png(tmp_path / "line" / f"{index}.png", textures.generate("wood", index, shape=(40, 52)))
    ds = SyntheticDataset.from_normals(str(tmp_path / "line"), seed=1)
    assert ds.class_names == ("line",) and len(ds) == 4 and ds.labels.sum() == 2
    for sample in ds:
        source_path = sample.path.removesuffix("#anomalous")
        original = cv2.cvtColor(cv2.imread(source_path), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(sample.mask, changed_pixels(original, sample.image))
        assert sample.mask.any() == bool(sample.label)

    for name in ("a", "b"):
        write_png(tmp_path / "multi" / name / "0.png", textures.generate("stone", 9))
    assert SyntheticDataset.from_normals(str(tmp_path / "multi")).class_names == ("a", "b")
    (tmp_path / "multi" / "stray.png").write_bytes(b"")
    with pytest.raises(DatasetError, match="mixes"):
        SyntheticDataset.from_normals(str(tmp_path / "multi"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        SyntheticDataset.from_normals(str(tmp_path / "empty"))


def test_train_split_holds_only_good_images_unlike_any_test_image():
    test = SyntheticDataset(seed=3, classes=["disc"], per_class=4, size=64)
    train = build_dataset("synthetic:seed=3,classes=disc,per_class=4,size=64", split="train")
    assert train.labels.tolist() == [0, 0, 0, 0]
    test_images = [sample.image for sample in test]
    for sample in train:
        assert not sample.mask.any()
        assert not any(np.array_equal(sample.image, image) for image in test_images)
    with pytest.raises(DatasetError, match="split"):
        SyntheticDataset(split="val")
