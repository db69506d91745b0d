"""The one record every dataset yields.

Why a single type: evaluation, training and the overlay writer all need the same five facts about an image
(pixels, ground-truth mask, label, class, defect type) plus where it came from, whatever the folder layout
or whether the image was synthesised. Checking the invariants once here means a loader bug (a mask of the
wrong size, a "good" image with defect pixels) fails at the loader, not as a silently wrong metric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GOOD = "good"


@dataclass(frozen=True, eq=False)
class Sample:
    """One test or training image with its ground truth.

    ``eq=False`` because the fields are arrays: comparing two samples element-wise is never what a caller
    means, and dataclass equality on arrays raises anyway.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB at the original resolution of the file.
        mask: ``(H, W)`` bool defect mask, all False for good images; ``None`` only when the whole dataset
            has no masks (image-level labels only).
        label: 0 for good, 1 for anomalous.
        class_name: the product class (MVTec category, VisA object, texture family).
        defect_type: ``"good"`` for normal images, else the defect folder name (``"anomaly"`` for VisA,
            whose split file does not name defects; the anomaly kind for synthetic data).
        path: the image file, or a ``synthetic://`` pseudo-path for generated images.
    """

    image: np.ndarray
    mask: np.ndarray | None
    label: int
    class_name: str
    defect_type: str
    path: str

    def __post_init__(self) -> None:
        """Refuse inconsistent records so that loader bugs surface where they are made."""
        image = self.image
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{self.path}: image must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        if self.label not in (0, 1):
            raise ValueError(f"{self.path}: label must be 0 or 1, got {self.label!r}")
        if (self.label == 0) != (self.defect_type == GOOD):
            raise ValueError(f"{self.path}: label {self.label} contradicts defect type {self.defect_type!r}")
        if self.mask is None:
            return
        if self.mask.dtype != np.bool_ or self.mask.shape != image.shape[:2]:
            raise ValueError(
                f"{self.path}: mask must be bool {image.shape[:2]}, got {self.mask.shape} {self.mask.dtype}"
            )
        if self.label == 0 and self.mask.any():
            raise ValueError(f"{self.path}: a good image has defect pixels in its mask")
