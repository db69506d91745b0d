"""Shared machinery of the datasets: the error type, lazy random access, and guarded file reading.

Why lazy: MVTec-AD's test split is ~1,700 images of up to 1024 x 1024 and VisA's ~2,200 of ~1500 x 1000, so
holding a dataset in memory costs gigabytes. Loaders list files and check that every mask exists when they
are built (cheap, and a missing file fails before an hour of evaluation rather than in the middle of it);
pixels are decoded only when a sample is asked for.
"""

from __future__ import annotations

import io
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from zsad_core.data.sample import Sample
from zsad_core.errors import ImageError, ZsadError
from zsad_core.imageio import IMAGE_SUFFIXES
from zsad_core.preprocess import DEFAULT_LIMITS, ImageLimits, probe_image, read_image

# Benchmark datasets ship BMP (BTAD, KolektorSDD) and TIFF (CVC-ClinicDB) files; reading them in place keeps the
# native layouts usable without a conversion step that could silently change pixels.
BENCHMARK_SUFFIXES = (*IMAGE_SUFFIXES, ".bmp", ".tif", ".tiff")
BENCHMARK_LIMITS = ImageLimits(formats=frozenset({"JPEG", "PNG", "BMP", "TIFF"}))
# Modes whose pixel values are the mask values themselves; everything else (RGB, palette) goes through RGB.
_SCALAR_MODES = frozenset({"1", "L", "I", "F", "I;16", "I;16L", "I;16B"})


class DatasetError(ZsadError, ValueError):
    """A dataset on disk is incomplete or inconsistent; the message names the file or class at fault.

    Loaders raise this instead of skipping data, because a silently smaller test set changes every metric
    and is not comparable with the papers' numbers.
    """

    reason = "bad_dataset"


@dataclass(frozen=True)
class Entry:
    """What a file-backed dataset knows about a sample before decoding it.

    Attributes:
        image_path: the image file.
        mask_path: its ground-truth mask file, ``None`` for good images (and for datasets without masks).
        label: 0 good, 1 anomalous.
        class_name: product class.
        defect_type: ``"good"`` or the defect name.
    """

    image_path: str
    mask_path: str | None
    label: int
    class_name: str
    defect_type: str


class BaseDataset(ABC):
    """Random-access, lazily decoded collection of :class:`Sample` ordered by class.

    Subclasses provide ``__len__``, ``labels``, ``sample_classes`` and ``_load``. Samples of one class are
    contiguous and classes come in ``class_names`` order, so a per-class evaluation can stream the dataset.
    """

    @abstractmethod
    def __len__(self) -> int:
        """Number of samples."""

    @abstractmethod
    def _load(self, index: int) -> Sample:
        """Decode or generate sample ``index`` (already range-checked)."""

    @property
    @abstractmethod
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 labels, known without decoding any image (for metrics and overlay selection)."""

    @property
    @abstractmethod
    def sample_classes(self) -> tuple[str, ...]:
        """The class name of every sample, in order, known without decoding."""

    @property
    def class_names(self) -> tuple[str, ...]:
        """Distinct class names in dataset order (sorted for folder layouts)."""
        return tuple(dict.fromkeys(self.sample_classes))

    def indices(self, class_name: str) -> np.ndarray:
        """``(n,)`` indices of the samples of one class, for per-class evaluation."""
        if class_name not in self.class_names:
            raise DatasetError(f"unknown class {class_name!r}; classes are {list(self.class_names)}")
        return np.flatnonzero(np.asarray(self.sample_classes) == class_name)

    def __getitem__(self, index: int) -> Sample:
        """Sample ``index`` (negative indices count from the end), decoded now."""
        size = len(self)
        if not -size <= index < size:
            raise IndexError(f"index {index} out of range for a dataset of {size} samples")
        return self._load(index % size)

    def __iter__(self) -> Iterator[Sample]:
        """Yield samples one at a time; only the current one is held in memory."""
        for index in range(len(self)):
            yield self._load(index)


class FileDataset(BaseDataset):
    """A dataset backed by image and mask files listed in :class:`Entry` records.

    Args:
        entries: the samples, grouped by class.
        has_masks: whether the dataset has pixel ground truth; if False every sample's mask is ``None``.
        limits: decoding limits passed to :func:`zsad_core.preprocess.read_image`.
    """

    def __init__(self, entries: Sequence[Entry], *, has_masks: bool = True, limits: ImageLimits = DEFAULT_LIMITS):
        self.entries = tuple(entries)
        self.has_masks = has_masks
        self.limits = limits

    def __len__(self) -> int:
        """Number of samples."""
        return len(self.entries)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 labels from the file listing."""
        return np.array([entry.label for entry in self.entries], dtype=np.int64)

    @property
    def sample_classes(self) -> tuple[str, ...]:
        """Class name of every sample, from the file listing."""
        return tuple(entry.class_name for entry in self.entries)

    @property
    def paths(self) -> tuple[str, ...]:
        """Image path of every sample, so reports can name files without decoding them."""
        return tuple(entry.image_path for entry in self.entries)

    def read_entry_mask(self, entry: Entry, shape: tuple[int, int]) -> np.ndarray:
        """The bool mask of ``entry``, an image whose pixels are ``shape``.

        Datasets whose ground truth is not a mask image (polygons in JSON, boxes in XML, MATLAB files)
        override this; ``shape`` lets them draw the annotation at the image's size.
        """
        return read_mask(entry.mask_path or "", self.limits)

    def _load(self, index: int) -> Sample:
        entry = self.entries[index]
        image = read_rgb(entry.image_path, self.limits)
        mask: np.ndarray | None = None
        if entry.mask_path is not None:
            mask = self.read_entry_mask(entry, image.shape[:2])
            if mask.shape != image.shape[:2]:
                raise DatasetError(
                    f"mask {entry.mask_path} is {mask.shape[1]}x{mask.shape[0]} but image {entry.image_path} "
                    f"is {image.shape[1]}x{image.shape[0]}"
                )
        elif self.has_masks:
            mask = np.zeros(image.shape[:2], dtype=bool)
        return Sample(image, mask, entry.label, entry.class_name, entry.defect_type, entry.image_path)


def read_rgb(path: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read an image through the guarded decoder, turning any failure into a :class:`DatasetError`.

    Args:
        path: image file.
        limits: decoding limits.

    Returns:
        ``(H, W, 3)`` uint8 RGB.

    Raises:
        DatasetError: the file is missing, unreadable, truncated, too large or not JPEG/PNG.
    """
    try:
        return read_image(path, limits)
    except (ImageError, OSError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def read_mask(path: str, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Read a ground-truth mask as bool, true where the stored value is > 0 (>= 128 for JPEG masks).

    JPEG masks (RSDD ships them) carry compression ringing around every edge, so "> 0" would grow each defect
    by a halo of noise; half the range is where a lossy 0/255 mask is split.

    Why not :func:`read_image`: masks are stored as 8-bit 0/255 (MVTec), 0/1 (some VisA releases), palette
    or 16-bit PNGs, and OpenCV's colour decoding turns a 16-bit 0/1 mask into all zeros. The papers read masks
    with Pillow (``convert("L") > 0``), so this does too, after the same header guards as every image.

    Args:
        path: mask file.
        limits: decoding limits (checked on the header before any pixel is decoded).

    Returns:
        ``(H, W)`` bool.

    Raises:
        DatasetError: the file is missing or unreadable.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read(limits.max_bytes + 1)
        fmt, _, _ = probe_image(data, limits)
        with Image.open(io.BytesIO(data)) as decoded:
            decoded.load()
            if decoded.mode in _SCALAR_MODES:
                values = np.asarray(decoded)
            else:
                # Any non-black colour is foreground; luminance could round a dark red (1, 0, 0) to 0.
                values = np.asarray(decoded.convert("RGB")).max(axis=2)
    except (ImageError, OSError, SyntaxError, ValueError) as exc:  # Pillow's decoders raise all three
        raise DatasetError(f"cannot read mask {path}: {exc}") from exc
    return values >= 128 if fmt == "JPEG" else values > 0


def list_images(folder: str, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> list[str]:
    """Sorted image files of one folder; refuses anything that is neither an image nor hidden.

    A stray ``.bmp`` or ``.tif`` among the test images is an error rather than skipped: skipping would make
    the test set silently smaller than the user thinks.

    Raises:
        DatasetError: a visible file has an unsupported suffix.
    """
    images = []
    for name in sorted(os.listdir(folder)):
        full = os.path.join(folder, name)
        if name.startswith(".") or not os.path.isfile(full):
            continue
        if not name.lower().endswith(tuple(suffixes)):
            raise DatasetError(f"{full}: not one of {', '.join(suffixes)}; convert it or move it out of the dataset")
        images.append(full)
    return images
