"""The papers' evaluation protocol: images squashed to S x S, masks resized and thresholded, metrics at S.

Why this matters (docs/methods.md, shared pieces): every repository read resizes the image with torchvision
``Resize((S, S), bicubic)`` (non-square VisA images are squashed), resizes the 0/255 mask with ``Resize((S,
S))``, turns it into a tensor and keeps ``> 0.5``, and computes every metric at S x S (518 or 240), not at
the original resolution. Matching numbers therefore needs exactly this, while a deployment that reports
maps on the camera image wants the original resolution; both are offered here.

Which bilinear the papers use: torchvision ``Resize`` on a *PIL* mask calls Pillow's ``Image.resize(...,
BILINEAR)``. Pillow's bilinear is a triangle filter whose support widens with the downscale factor (it
antialiases), and it rounds to uint8 after each of its two separable passes. ``resize_mask`` runs that same
Pillow call on the 0/255 mask, so the thresholded masks are the papers' masks bit for bit. (``torch``'s
``F.interpolate(..., "bilinear", antialias=True)`` computes the same filter in float; it differs only on
pixels within a rounding step of the 0.5 threshold.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from zsad_core.data.sample import Sample
from zsad_core.preprocess import Geometry, Interpolation, PreprocessConfig, map_to_original, resize_image

Resolution = Literal["protocol", "original"]
# resize_image ignores normalisation; these placeholders only satisfy PreprocessConfig's required fields.
_NO_NORMALISATION = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a ground-truth mask to ``size x size`` the way the papers do.

    The mask becomes a 0/255 8-bit image, Pillow bilinear resizes it (with its downscale antialiasing), and
    pixels above 0.5 after scaling to [0, 1] (that is, >= 128) are defect. A thin defect can therefore vanish
    at a small S, exactly as in the published numbers.

    Args:
        mask: ``(H, W)`` bool (or 0/1) mask at the original resolution.
        size: side S of the protocol resolution.

    Returns:
        ``(S, S)`` bool mask.
    """
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    gray = np.where(np.asarray(mask) > 0, np.uint8(255), np.uint8(0))
    if gray.shape == (size, size):
        return gray > 0
    resized = Image.fromarray(gray).resize((size, size), Image.Resampling.BILINEAR)
    # ToTensor divides by 255 and the papers keep > 0.5; in integers that is value > 127.5, i.e. >= 128.
    return np.asarray(resized) >= 128


@dataclass(frozen=True, eq=False)
class ProtocolSample:
    """A sample ready for a model and for the metrics, at the chosen evaluation resolution.

    Attributes:
        model_image: ``(S, S, 3)`` uint8 RGB, squashed with bicubic; what the model sees in both modes.
        mask: bool ground truth at the evaluation resolution, ``(S, S)`` for ``"protocol"`` and the original
            ``(H, W)`` for ``"original"``; ``None`` if the dataset has no masks.
        label, class_name, defect_type, path: copied from the :class:`Sample`.
        geometry: how ``model_image`` maps back onto the original image.
        resolution: ``"protocol"`` (papers) or ``"original"``.
    """

    model_image: np.ndarray
    mask: np.ndarray | None
    label: int
    class_name: str
    defect_type: str
    path: str
    geometry: Geometry
    resolution: Resolution

    def eval_map(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Bring a model's ``(S, S)`` anomaly map to the evaluation resolution of this sample.

        Args:
            anomaly_map: ``(S, S)`` float map computed on ``model_image``.

        Returns:
            The map itself for ``"protocol"``; the map resized to ``(H, W)`` with
            :func:`zsad_core.preprocess.map_to_original` for ``"original"``.
        """
        expected = self.model_image.shape[:2]
        if anomaly_map.shape != expected:
            raise ValueError(f"{self.path}: anomaly map is {anomaly_map.shape}, model input was {expected}")
        if self.resolution == "protocol":
            return anomaly_map
        return map_to_original(anomaly_map, self.geometry)


def to_protocol(
    sample: Sample,
    size: int,
    *,
    resolution: Resolution = "protocol",
    interpolation: Interpolation = "bicubic",
) -> ProtocolSample:
    """Turn a :class:`Sample` into model input plus ground truth at the evaluation resolution.

    Args:
        sample: a decoded sample at its original resolution.
        size: model input side S (518 for ViT-L/14@336 methods, 240 for ViT-B-16-plus-240 methods).
        resolution: ``"protocol"`` resizes the mask to S x S with :func:`resize_mask` (the papers' numbers);
            ``"original"`` keeps the mask as it is and maps are resized back by
            :meth:`ProtocolSample.eval_map`.
        interpolation: image filter; ``"bicubic"`` is the papers' choice.

    Returns:
        The :class:`ProtocolSample`.
    """
    if resolution not in ("protocol", "original"):
        raise ValueError(f"resolution must be 'protocol' or 'original', got {resolution!r}")
    mean, std = _NO_NORMALISATION
    cfg = PreprocessConfig(image_size=size, mean=mean, std=std, resize="squash", interpolation=interpolation)
    model_image, geometry = resize_image(sample.image, cfg)
    mask = sample.mask
    if mask is not None and resolution == "protocol":
        mask = resize_mask(mask, size)
    return ProtocolSample(
        model_image,
        mask,
        sample.label,
        sample.class_name,
        sample.defect_type,
        sample.path,
        geometry,
        resolution,
    )


def protocol_samples(
    samples: Iterable[Sample],
    size: int,
    *,
    resolution: Resolution = "protocol",
    interpolation: Interpolation = "bicubic",
) -> Iterator[ProtocolSample]:
    """Lazily apply :func:`to_protocol` to a dataset, one sample in memory at a time."""
    for sample in samples:
        yield to_protocol(sample, size, resolution=resolution, interpolation=interpolation)
