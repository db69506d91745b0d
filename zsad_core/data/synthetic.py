"""Synthetic auxiliary data: procedural "products", defects with exact masks, and a dataset of both.

Why: the trained methods (VCP-CLIP, ViP²-CLIP, CLIP-AD SDP+, AnomalyCLIP) learn prompts from an auxiliary
dataset with pixel masks. Procedural textures make a smoke-test dataset with no download, and the defect
synthesizer turns a user's *normal* images into auxiliary training data with masks, in the spirit of
CutPaste and DRAEM, when no labelled defects exist.

Reproducibility: every random choice comes from a ``numpy.random.Generator``; a dataset derives one
generator per sample from ``(seed, class index, sample index)``, so the same seed gives byte-identical
samples in any access order, and a sample can be regenerated alone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from zsad_core.data.base import BaseDataset, DatasetError, list_images, read_rgb
from zsad_core.data.noise import fractal_noise, perlin_noise
from zsad_core.data.sample import GOOD, Sample
from zsad_core.preprocess import DEFAULT_LIMITS, ImageLimits

FAMILIES = ("woven", "wood", "stone", "disc")
KINDS = ("cutpaste", "scratch", "stain", "perlin")
MIN_SIDE = 16

Family = Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


def as_generator(rng: np.random.Generator | int) -> np.random.Generator:
    """Accept a seed or a generator, so one-off calls stay short and pipelines can pass their own stream."""
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return rows, cols  # (H, W) each


def _colour(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    return rng.uniform(low, high, size=3).astype(np.float32)


def _woven(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    """Plain weave: two families of threads crossing over and under each other (fabric, carpet, grid)."""
    rows, cols = _grid(height, width)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(6.0, 14.0) * max(height, width) / 128.0
    along = (cols * np.cos(angle) + rows * np.sin(angle)) / period
    across = (-cols * np.sin(angle) + rows * np.cos(angle)) / period
    warp_on_top = (np.floor(along) + np.floor(across)) % 2 == 0
    # Each thread is brightest along its centre line and dark in the gaps between threads.
    relief = np.where(warp_on_top, np.sin(np.pi * (along % 1.0)), np.sin(np.pi * (across % 1.0)))
    # Related thread colours, as in a real fabric: the weft is a darker, slightly shifted warp.
    warp = _colour(rng, 60, 230)
    weft = np.clip(warp * rng.uniform(0.55, 0.95) + rng.normal(0.0, 20.0, size=3), 0, 255).astype(np.float32)
    base = np.where(warp_on_top[..., None], warp, weft)
    return base * (0.35 + 0.65 * relief[..., None]), None


def _wood(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    """Growth rings around a centre outside the image, bent by low-frequency noise, plus fine grain."""
    rows, cols = _grid(height, width)
    side = max(height, width)
    centre_y, centre_x = rng.uniform(-2.0, -0.5) * side, rng.uniform(-0.5, 1.5) * side
    stretch = rng.uniform(0.15, 0.5)
    radius = np.sqrt(((cols - centre_x) * stretch) ** 2 + (rows - centre_y) ** 2)
    rings = radius / (rng.uniform(5.0, 12.0) * side / 128.0) + 2.0 * fractal_noise((height, width), 2, rng, octaves=3)
    late_wood = (rings % 1.0) ** rng.uniform(2.0, 4.0)
    grain = perlin_noise((height, width), (2, max(2, width // 4)), rng)
    light = np.array([rng.uniform(170, 230), rng.uniform(120, 170), rng.uniform(60, 110)], dtype=np.float32)
    dark = light * rng.uniform(0.45, 0.7)
    blend = np.clip(late_wood + 0.15 * grain, 0.0, 1.0)[..., None]
    return light * (1.0 - blend) + dark * blend, None


def _stone(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, None]:
    """Fractal noise through a three-colour palette with sparse speckles (stone, concrete, tile)."""
    noise = fractal_noise((height, width), int(rng.integers(2, 6)), rng, octaves=5)
    level = np.clip(noise * 1.4 + 0.5, 0.0, 1.0)[..., None]
    low, mid, high = _colour(rng, 30, 110), _colour(rng, 90, 170), _colour(rng, 150, 240)
    image = np.where(level < 0.5, low + (mid - low) * level * 2.0, mid + (high - mid) * (level - 0.5) * 2.0)
    speckles = rng.random((height, width)) > 0.995
    image[speckles] *= 0.5
    return image, None


def _disc(height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A shaded, bevelled disc (bottle top, cap, pill) centred on a plain background with a soft shadow."""
    rows, cols = _grid(height, width)
    side = min(height, width)
    radius = rng.uniform(0.28, 0.38) * side
    centre_y = height / 2.0 + rng.uniform(-0.05, 0.05) * side
    centre_x = width / 2.0 + rng.uniform(-0.05, 0.05) * side
    dist = np.sqrt((rows - centre_y) ** 2 + (cols - centre_x) ** 2) / radius
    rim = rng.uniform(0.7, 0.85)
    relief = np.where(dist < rim, 1.0, np.cos(np.clip((dist - rim) / (1.0 - rim), 0.0, 1.0) * np.pi / 2.0))
    relief = relief + 0.03 * np.sin(dist * rng.uniform(20.0, 40.0)) * (dist < rim)
    grad_y, grad_x = np.gradient(relief * radius * 0.25)
    light = np.array([-0.5, -0.5, 1.0]) / math.sqrt(1.5)
    shade = (light[2] - light[0] * grad_x - light[1] * grad_y) / np.sqrt(1.0 + grad_x**2 + grad_y**2)
    inside = dist <= 1.0
    obj = _colour(rng, 40, 230) * (0.55 + 0.45 * np.clip(shade, 0.0, 1.0))[..., None]
    background = _colour(rng, 60, 220) * (0.9 + 0.1 * cols / max(width - 1, 1))[..., None]
    shadow_dist = np.sqrt((rows - centre_y - 0.06 * radius) ** 2 + (cols - centre_x - 0.06 * radius) ** 2) / radius
    background = background * (1.0 - 0.35 * np.exp(-np.clip(shadow_dist - 1.0, 0.0, None) * 8.0))[..., None]
    return np.where(inside[..., None], obj, background), inside


_FAMILY_FUNCTIONS: dict[str, Family] = {"woven": _woven, "wood": _wood, "stone": _stone, "disc": _disc}


class TextureGenerator:
    """Procedural images of a few product families, each family being one class of a synthetic dataset.

    Families: ``woven`` (fabric/grid), ``wood`` (rings and grain), ``stone`` (fractal noise palette) and
    ``disc`` (a centred, shaded object on a background; its foreground mask keeps defects on the object).

    Args:
        size: side of the square images made when no ``shape`` is given.
        noise_std: std of the per-pixel sensor noise, in grey levels; some noise keeps the textures from
            being perfectly smooth, which would make every defect trivially visible.
    """

    families = FAMILIES

    def __init__(self, size: int = 128, *, noise_std: float = 2.0):
        if size < MIN_SIDE:
            raise ValueError(f"size must be at least {MIN_SIDE}, got {size}")
        self.size = size
        self.noise_std = noise_std

    def generate_with_foreground(
        self, family: str, rng: np.random.Generator | int, *, shape: tuple[int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Make one image of ``family`` and, for object families, the mask of the object.

        Args:
            family: one of :attr:`families`.
            rng: generator or seed.
            shape: ``(H, W)``; default ``(size, size)``.

        Returns:
            ``(H, W, 3)`` uint8 RGB and an ``(H, W)`` bool foreground mask, or ``None`` for textures that
            are all foreground.
        """
        if family not in _FAMILY_FUNCTIONS:
            raise ValueError(f"unknown texture family {family!r}; families are {list(FAMILIES)}")
        rng = as_generator(rng)
        height, width = shape or (self.size, self.size)
        image, foreground = _FAMILY_FUNCTIONS[family](height, width, rng)
        image = image + rng.normal(0.0, self.noise_std, size=image.shape)
        return np.clip(np.rint(image), 0, 255).astype(np.uint8), foreground

    def generate(
        self, family: str, rng: np.random.Generator | int, *, shape: tuple[int, int] | None = None
    ) -> np.ndarray:
        """Make one ``(H, W, 3)`` uint8 RGB image of ``family`` (see :meth:`generate_with_foreground`)."""
        return self.generate_with_foreground(family, rng, shape=shape)[0]


@dataclass(frozen=True, eq=False)
class Anomaly:
    """An image with a synthetic defect.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        mask: ``(H, W)`` bool; exactly the pixels that differ from the normal image.
        kind: the defect kind that was drawn (see :data:`KINDS`).
    """

    image: np.ndarray
    mask: np.ndarray
    kind: str


class AnomalySynthesizer:
    """Turns any normal RGB image into an anomalous one with a pixel-exact mask.

    Kinds: ``cutpaste`` (a patch of the same image, jittered in colour, possibly rotated, pasted elsewhere),
    ``scratch`` (a thin polyline in a contrasting colour), ``stain`` (a soft blob of colour) and ``perlin``
    (a Perlin-noise-shaped region blended with another texture, as in DRAEM).

    The mask is exactly the set of changed pixels: pixels outside it are bit-identical to the input, and a
    pixel inside the defect region whose value happened to come out unchanged (a pasted patch over a flat
    area) is nudged by 16 grey levels, so no label claims a defect that is not in the pixels. A draw whose
    mean change is below ``min_contrast`` is redrawn (an invisible defect is a wrong training label); after
    ``max_tries`` a solid, high-contrast stain is used instead.

    Args:
        kinds: the kinds to draw from uniformly; default all.
        textures: generator of the blend textures for ``perlin``; default a :class:`TextureGenerator`.
        blend_sources: optional RGB images used instead of procedural textures for ``perlin`` (e.g. a
            texture dataset), resized to each input image.
        min_contrast: least mean absolute change (grey levels, max over channels) inside a defect.
        max_tries: redraws before falling back to a solid stain.
    """

    kinds = KINDS

    def __init__(
        self,
        kinds: Sequence[str] | None = None,
        *,
        textures: TextureGenerator | None = None,
        blend_sources: Sequence[np.ndarray] | None = None,
        min_contrast: float = 12.0,
        max_tries: int = 8,
    ):
        chosen = tuple(kinds) if kinds is not None else KINDS
        unknown = [kind for kind in chosen if kind not in KINDS]
        if unknown or not chosen:
            raise ValueError(f"unknown or no anomaly kinds {unknown or list(chosen)}; kinds are {list(KINDS)}")
        self.kinds = chosen
        self.textures = textures or TextureGenerator()
        self.blend_sources = tuple(blend_sources) if blend_sources is not None else ()
        for source in self.blend_sources:
            if source.dtype != np.uint8 or source.ndim != 3 or source.shape[2] != 3:
                raise ValueError(f"blend sources must be (H, W, 3) uint8 RGB, got {source.shape} {source.dtype}")
        self.min_contrast = min_contrast
        self.max_tries = max_tries
        self._draw = {
            "cutpaste": self._cutpaste,
            "scratch": self._scratch,
            "stain": self._stain,
            "perlin": self._perlin,
        }

    def __call__(
        self,
        image: np.ndarray,
        rng: np.random.Generator | int,
        *,
        kind: str | None = None,
        region: np.ndarray | None = None,
    ) -> Anomaly:
        """Add one defect to ``image``.

        Args:
            image: ``(H, W, 3)`` uint8 RGB normal image, both sides >= 16; not modified.
            rng: generator or seed.
            kind: force a kind; default a uniform draw from :attr:`kinds`.
            region: optional ``(H, W)`` bool mask of where defects may appear (e.g. the object, not the
                background).

        Returns:
            The :class:`Anomaly`.
        """
        _check_image(image)
        rng = as_generator(rng)
        if region is not None:
            region = np.asarray(region, dtype=bool)
            if region.shape != image.shape[:2] or not region.any():
                raise ValueError(f"region must be a non-empty bool mask of shape {image.shape[:2]}")
        kind = kind if kind is not None else str(rng.choice(self.kinds))
        if kind not in self._draw:
            raise ValueError(f"unknown anomaly kind {kind!r}; kinds are {list(KINDS)}")
        min_pixels = max(8, image.shape[0] * image.shape[1] // 2000)
        for _ in range(self.max_tries):
            candidate, area = self._draw[kind](image, rng)
            if region is not None:
                area &= region
            if area.sum() < min_pixels:
                continue
            result = np.where(area[..., None], _to_uint8(candidate), image)
            change = np.abs(result.astype(np.int16) - image).max(axis=2)
            if change[area].mean() >= self.min_contrast:
                return _finish(image, result, area, kind)
        candidate, area = _solid_stain(image, rng, region)
        return _finish(image, np.where(area[..., None], _to_uint8(candidate), image), area, "stain")

    def _cutpaste(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        side = min(height, width)
        patch_h, patch_w = (int(rng.integers(max(4, side // 12), side // 4 + 1)) for _ in range(2))
        top, left = int(rng.integers(0, height - patch_h + 1)), int(rng.integers(0, width - patch_w + 1))
        patch = image[top : top + patch_h, left : left + patch_w].astype(np.float32)
        patch = patch * rng.uniform(0.75, 1.25) + rng.uniform(-20.0, 20.0, size=3).astype(np.float32)
        # A canvas as wide as the patch diagonal holds the patch at any rotation.
        canvas_side = math.ceil(math.hypot(patch_h, patch_w))
        canvas = np.zeros((canvas_side, canvas_side, 3), np.float32)
        weight = np.zeros((canvas_side, canvas_side), np.float32)
        off_y, off_x = (canvas_side - patch_h) // 2, (canvas_side - patch_w) // 2
        canvas[off_y : off_y + patch_h, off_x : off_x + patch_w] = patch
        weight[off_y : off_y + patch_h, off_x : off_x + patch_w] = 1.0
        angle = rng.uniform(-180.0, 180.0) if rng.random() < 0.5 else 0.0
        matrix = cv2.getRotationMatrix2D(((canvas_side - 1) / 2.0, (canvas_side - 1) / 2.0), angle, 1.0)
        canvas = cv2.warpAffine(canvas, matrix, (canvas_side, canvas_side), flags=cv2.INTER_LINEAR)
        weight = cv2.warpAffine(weight, matrix, (canvas_side, canvas_side), flags=cv2.INTER_LINEAR)
        inside = weight > 0.5
        # Dividing by the interpolated weight undoes the darkening that blending with the empty canvas adds.
        canvas = canvas / np.maximum(weight, 1e-6)[..., None]
        dest_y = int(rng.integers(0, height - canvas_side + 1))
        dest_x = int(rng.integers(0, width - canvas_side + 1))
        candidate = image.astype(np.float32)
        area = np.zeros((height, width), dtype=bool)
        window = (slice(dest_y, dest_y + canvas_side), slice(dest_x, dest_x + canvas_side))
        candidate[window][inside] = canvas[inside]
        area[window] = inside
        return candidate, area

    def _scratch(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        side = min(height, width)
        points = [np.array([rng.uniform(0, width - 1), rng.uniform(0, height - 1)])]
        heading = rng.uniform(0.0, 2.0 * np.pi)
        for _ in range(int(rng.integers(1, 5))):
            heading += rng.normal(0.0, 0.35)
            step = rng.uniform(0.08, 0.25) * side * np.array([np.cos(heading), np.sin(heading)])
            points.append(np.clip(points[-1] + step, 0, [width - 1, height - 1]))
        canvas = np.zeros((height, width), np.uint8)
        polyline = np.rint(np.stack(points)).astype(np.int32).reshape(-1, 1, 2)
        thickness = int(rng.integers(1, max(1, side // 64) + 2))
        cv2.polylines(canvas, [polyline], isClosed=False, color=255, thickness=thickness, lineType=cv2.LINE_8)
        area = canvas > 0
        bright = image[area].mean() > 127.0 if area.any() else True
        base = rng.uniform(0.0, 50.0) if bright else rng.uniform(205.0, 255.0)
        colour = base + rng.uniform(-15.0, 15.0, size=3)
        return np.broadcast_to(colour.astype(np.float32), image.shape), area

    def _stain(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        side = min(height, width)
        rows, cols = _grid(height, width)
        centre = np.array([rng.uniform(0.15, 0.85) * height, rng.uniform(0.15, 0.85) * width])
        blob = np.zeros((height, width), np.float32)
        for _ in range(int(rng.integers(1, 5))):
            cy, cx = centre + rng.normal(0.0, 0.05 * side, size=2)
            sy, sx = rng.uniform(0.02, 0.08, size=2) * side
            blob += np.exp(-0.5 * (((rows - cy) / sy) ** 2 + ((cols - cx) / sx) ** 2))
        # Noise on the blob makes the edge ragged, like a real spill, instead of a clean ellipse.
        blob *= 1.0 + 0.6 * perlin_noise((height, width), (6, 6), rng)
        alpha = np.clip(blob, 0.0, 1.0) * rng.uniform(0.6, 0.95)
        colour = _colour(rng, 0, 255)
        candidate = image.astype(np.float32) * (1.0 - alpha[..., None]) + colour * alpha[..., None]
        return candidate, alpha > 0.12

    def _perlin(self, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        height, width = image.shape[:2]
        area = fractal_noise((height, width), int(rng.integers(2, 6)), rng, octaves=3) > rng.uniform(0.15, 0.3)
        if self.blend_sources:
            source = self.blend_sources[int(rng.integers(len(self.blend_sources)))]
            texture = cv2.resize(source, (width, height), interpolation=cv2.INTER_LINEAR)
        else:
            family = str(rng.choice(self.textures.families))
            texture = self.textures.generate(family, rng, shape=(height, width))
        beta = rng.uniform(0.5, 1.0)
        return (1.0 - beta) * image.astype(np.float32) + beta * texture.astype(np.float32), area


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image sides must be at least {MIN_SIDE} pixels, got {image.shape[:2]}")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _finish(image: np.ndarray, result: np.ndarray, area: np.ndarray, kind: str) -> Anomaly:
    unchanged = area & (result == image).all(axis=2)
    result = result.copy()
    result[unchanged] = image[unchanged] ^ np.uint8(16)  # +-16 on every channel: certainly different
    return Anomaly(result, area.copy(), kind)


def _solid_stain(
    image: np.ndarray, rng: np.random.Generator, region: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """An opaque ellipse in black or white, whichever contrasts more; the fallback that is always visible."""
    height, width = image.shape[:2]
    allowed = region if region is not None else np.ones((height, width), dtype=bool)
    ys, xs = np.nonzero(allowed)
    pick = int(rng.integers(len(ys)))
    axes = (max(2, int(rng.uniform(0.04, 0.1) * width)), max(2, int(rng.uniform(0.04, 0.1) * height)))
    canvas = np.zeros((height, width), np.uint8)
    cv2.ellipse(canvas, (int(xs[pick]), int(ys[pick])), axes, rng.uniform(0, 180), 0, 360, 255, thickness=-1)
    area = (canvas > 0) & allowed
    colour = 0.0 if image[area].mean() > 127.0 else 255.0
    return np.full(image.shape, colour, dtype=np.float32), area


# Last element of the per-sample seed key: the test split keeps the stream it always had (1).
_SPLIT_STREAMS = {"test": 1, "train": 2}


class SyntheticDataset(BaseDataset):
    """Auxiliary data with masks: procedural textures, or a user's normal images, with synthetic defects.

    About ``anomaly_ratio`` of each class is anomalous (rounded; the positions are a seeded permutation).
    Normal samples have an all-False mask; anomalous ones the exact mask of the synthetic defect and
    ``defect_type`` set to its kind. Samples are generated on access from a per-sample generator, so the
    dataset holds no pixels.

    Args:
        seed: non-negative master seed.
        classes: number of texture families (the first ``classes`` of :data:`FAMILIES`) or their names.
        per_class: samples per class.
        size: image side.
        anomaly_ratio: fraction of anomalous samples per class, in [0, 1].
        kinds: anomaly kinds to draw from; default all.
        split: ``test`` (good and anomalous samples) or ``train``: good samples only, drawn from a separate
            random stream, so few-shot references never repeat a test image (MVTec-AD's train/test layout).

    Use :meth:`from_normals` to build the dataset from a folder of normal images instead.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        classes: int | Sequence[str] = len(FAMILIES),
        per_class: int = 8,
        size: int = 128,
        anomaly_ratio: float = 0.5,
        kinds: Sequence[str] | None = None,
        split: str = "test",
    ):
        names = _family_names(classes)
        if per_class < 1:
            raise DatasetError(f"per_class must be >= 1, got {per_class}")
        if split not in _SPLIT_STREAMS:
            raise DatasetError(f"split must be one of {list(_SPLIT_STREAMS)}, got {split!r}")
        self.textures = TextureGenerator(size)
        self.limits = DEFAULT_LIMITS
        self._stream = _SPLIT_STREAMS[split]
        ratio = anomaly_ratio if split == "test" else 0.0
        self._setup(seed, ratio, kinds, {name: [None] * per_class for name in names})

    @classmethod
    def from_normals(
        cls,
        root: str,
        *,
        seed: int = 0,
        anomaly_ratio: float = 0.5,
        kinds: Sequence[str] | None = None,
        limits: ImageLimits = DEFAULT_LIMITS,
    ) -> SyntheticDataset:
        """Auxiliary data from a folder of the user's normal images, one sample per image.

        ``root`` either holds the images directly (one class named after the folder) or holds one
        sub-folder of images per class. Images keep their resolution; each anomalous sample is its image
        with one synthetic defect.

        Raises:
            DatasetError: the folder is missing, empty, mixes images and class folders, or holds a file that
                is not an image.
        """
        dataset = cls.__new__(cls)
        dataset.textures = TextureGenerator()
        dataset.limits = limits
        dataset._stream = _SPLIT_STREAMS["test"]
        dataset._setup(seed, anomaly_ratio, kinds, _normal_files(root))
        return dataset

    def _setup(
        self,
        seed: int,
        anomaly_ratio: float,
        kinds: Sequence[str] | None,
        sources: dict[str, list[str | None]],
    ) -> None:
        if not isinstance(seed, int | np.integer) or seed < 0:
            raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
        if not 0.0 <= anomaly_ratio <= 1.0:
            raise DatasetError(f"anomaly_ratio must lie in [0, 1], got {anomaly_ratio}")
        self.seed = int(seed)
        self.anomaly_ratio = anomaly_ratio
        self.synthesizer = AnomalySynthesizer(kinds, textures=self.textures)
        self._slots: list[tuple[int, str, int, int, str | None]] = []
        for class_index, (name, files) in enumerate(sources.items()):
            labels = np.zeros(len(files), dtype=np.int64)
            order = np.random.default_rng([self.seed, class_index, 0, 0]).permutation(len(files))
            labels[order[: round(len(files) * anomaly_ratio)]] = 1
            for index, (label, source) in enumerate(zip(labels, files, strict=True)):
                self._slots.append((class_index, name, index, int(label), source))

    def __len__(self) -> int:
        """Number of samples."""
        return len(self._slots)

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` int64 labels, decided by the seed without generating images."""
        return np.array([slot[3] for slot in self._slots], dtype=np.int64)

    @property
    def sample_classes(self) -> tuple[str, ...]:
        """Class name of every sample."""
        return tuple(slot[1] for slot in self._slots)

    def _load(self, index: int) -> Sample:
        class_index, name, local, label, source = self._slots[index]
        # Fixed-length keys: numpy's SeedSequence treats [a, b] and [a, b, 0] alike.
        rng = np.random.default_rng([self.seed, class_index, local, self._stream])
        if source is None:
            image, foreground = self.textures.generate_with_foreground(name, rng)
            path = f"synthetic://{name}/{local:05d}"
        else:
            image, foreground, path = read_rgb(source, self.limits), None, source
        if label == 0:
            return Sample(image, np.zeros(image.shape[:2], dtype=bool), 0, name, GOOD, path)
        try:
            anomaly = self.synthesizer(image, rng, region=foreground)
        except ValueError as exc:
            raise DatasetError(f"{path}: cannot synthesise a defect: {exc}") from exc
        suffix = "" if source is None else "#anomalous"
        return Sample(anomaly.image, anomaly.mask, 1, name, anomaly.kind, path + suffix)


def _family_names(classes: int | Sequence[str]) -> list[str]:
    if isinstance(classes, int | np.integer):
        if not 1 <= classes <= len(FAMILIES):
            raise DatasetError(f"classes must be 1..{len(FAMILIES)} texture families, got {classes}")
        return list(FAMILIES[: int(classes)])
    names = [classes] if isinstance(classes, str) else list(classes)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown or not names:
        raise DatasetError(f"unknown texture families {unknown or names}; families are {list(FAMILIES)}")
    return names


def _normal_files(root: str) -> dict[str, list[str | None]]:
    if not os.path.isdir(root):
        raise DatasetError(f"normal-image folder {root} does not exist")
    entries = [name for name in sorted(os.listdir(root)) if not name.startswith(".")]
    folders = [name for name in entries if os.path.isdir(os.path.join(root, name))]
    if folders and len(folders) != len(entries):
        raise DatasetError(f"{root} mixes image files and class folders; use one or the other")
    if not folders:
        groups = {os.path.basename(os.path.normpath(os.path.abspath(root))): root}
    else:
        groups = {name: os.path.join(root, name) for name in folders}
    sources: dict[str, list[str | None]] = {}
    for name, folder in groups.items():
        files = list_images(folder)
        if not files:
            raise DatasetError(f"class {name!r} has no images in {folder}")
        sources[name] = list(files)
    return sources
