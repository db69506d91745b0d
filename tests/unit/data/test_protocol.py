"""The papers' evaluation protocol: mask resize against an independent implementation, image squash, maps."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from zsad_core.data import GOOD, Sample, protocol_samples, resize_mask, to_protocol
from zsad_core.preprocess import map_to_original


def torch_reference(mask: np.ndarray, size: int) -> np.ndarray:
    """Pillow's bilinear as torch computes it in float: triangle filter widened by the downscale factor.

    ``antialias=True`` is what makes torch's bilinear the same filter as Pillow's (which torchvision's
    ``Resize`` runs on the papers' PIL masks); ``align_corners=False`` is Pillow's pixel-centre convention.
    """
    tensor = torch.from_numpy(mask.astype(np.float32))[None, None]
    resized = F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return resized[0, 0].numpy()


def random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    for _ in range(4):
        centre = (int(rng.integers(width)), int(rng.integers(height)))
        axes = (int(rng.integers(1, max(2, width // 3))), int(rng.integers(1, max(2, height // 3))))
        cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    start = (int(rng.integers(width)), int(rng.integers(height)))
    end = (int(rng.integers(width)), int(rng.integers(height)))
    cv2.line(mask, start, end, 1, 1)  # thin defects are the ones the resize can erase
    return mask.astype(bool)


def assert_matches_reference(mask: np.ndarray, size: int) -> None:
    ours = resize_mask(mask, size)
    reference = torch_reference(mask, size)
    assert ours.dtype == np.bool_ and ours.shape == (size, size)
    # Pillow rounds to 8 bits after each of its two passes, and an exact 0.5 (common when upscaling) becomes
    # 128/255 > 0.5; so only pixels within that rounding of the threshold may differ, and none elsewhere.
    disagree = ours != (reference > 0.5)
    near_threshold = np.abs(reference - 0.5) < 1.5 / 255.0
    assert not (disagree & ~near_threshold).any()


@pytest.mark.parametrize(("shape", "size"), [((100, 80), 37), ((300, 260), 240), ((60, 90), 240), ((10, 12), 37)])
def test_resize_mask_matches_antialiased_bilinear(shape, size):
    assert_matches_reference(random_mask(np.random.default_rng(sum(shape) + size), *shape), size)


@settings(max_examples=25, deadline=None)
@given(
    height=st.integers(2, 64),
    width=st.integers(2, 64),
    size=st.integers(1, 48),
    seed=st.integers(0, 2**16),
)
def test_resize_mask_matches_reference_on_random_shapes(height, width, size, seed):
    assert_matches_reference(random_mask(np.random.default_rng(seed), height, width), size)


def test_resize_mask_edge_cases():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 3:7] = True
    np.testing.assert_array_equal(resize_mask(mask, 8), mask)  # same size: unchanged
    assert not resize_mask(np.zeros((50, 40), bool), 16).any()
    assert resize_mask(np.ones((50, 40), bool), 16).all()
    thin = np.zeros((400, 400), bool)
    thin[200, :] = True
    assert not resize_mask(thin, 40).any()  # a 1-px line at 1/10 scale averages to 0.1 and vanishes
    assert resize_mask(np.array([[0, 1], [1, 1]], dtype=np.uint8), 2).sum() == 3  # 0/1 ints accepted
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        resize_mask(np.zeros((4, 4, 1), bool), 2)


def make_sample(height: int = 30, width: int = 50, label: int = 1) -> Sample:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), bool)
    if label:
        mask[5:20, 10:40] = True
    return Sample(image, mask, label, "widget", "dent" if label else GOOD, "widget/x.png")


def test_to_protocol_squashes_image_with_pillow_bicubic_and_resizes_mask():
    sample = make_sample()
    out = to_protocol(sample, 24)
    expected_image = np.asarray(Image.fromarray(sample.image).resize((24, 24), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(out.model_image, expected_image)
    np.testing.assert_array_equal(out.mask, resize_mask(sample.mask, 24))
    assert (out.label, out.class_name, out.defect_type, out.path) == (1, "widget", "dent", "widget/x.png")
    anomaly_map = np.random.default_rng(1).random((24, 24)).astype(np.float32)
    assert out.eval_map(anomaly_map) is anomaly_map
    with pytest.raises(ValueError, match="anomaly map"):
        out.eval_map(np.zeros((12, 12), np.float32))


def test_to_protocol_original_resolution_keeps_mask_and_maps_back():
    sample = make_sample()
    out = to_protocol(sample, 24, resolution="original")
    assert out.model_image.shape == (24, 24, 3)
    np.testing.assert_array_equal(out.mask, sample.mask)
    anomaly_map = np.random.default_rng(2).random((24, 24)).astype(np.float32)
    back = out.eval_map(anomaly_map)
    assert back.shape == (30, 50)
    np.testing.assert_array_equal(back, map_to_original(anomaly_map, out.geometry))
    with pytest.raises(ValueError, match="resolution"):
        to_protocol(sample, 24, resolution="native")  # type: ignore[arg-type]


def test_protocol_samples_is_lazy_and_keeps_none_masks():
    def generate():
        yield make_sample(label=0)
        raise AssertionError("consumed beyond the first sample")

    stream = protocol_samples(generate(), 16)
    first = next(stream)
    assert first.mask.shape == (16, 16) and not first.mask.any()
    no_mask = Sample(make_sample().image, None, 1, "widget", "dent", "p.png")
    assert to_protocol(no_mask, 16).mask is None
