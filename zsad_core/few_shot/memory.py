"""The reference memory: patch features of k normal images, their nearest-neighbour distance map, and the
memory's artifact format.

The few-shot recipe shared by WinCLIP+, APRIL-GAN, AnomalyCLIP and PromptAD keeps the patch tokens of the
reference images and scores each test patch by its distance to the nearest reference patch. Nothing here
belongs to one method: the memory is built from the shared backbone's taps (a method's own by default), so
any method can be given references (:mod:`zsad_core.few_shot.method`).

Distances (per tap, then averaged over taps):

* ``cosine``: ``min_m (1 - cos(q, m)) / 2`` in [0, 1], the visual-association score of WinCLIP+ and the
  few-shot map of APRIL-GAN.
* ``l2``: ``min_m ||q - m||``, PatchCore's.

Serialisation follows :mod:`zsad_core.artifacts`: a directory with ``references.safetensors`` and
``manifest.json`` (backbone identity with input size, taps, feature kind, distance, sha256). A memory built on
another backbone or input size is refused before any tensor is read, because its distances would be
meaningless rather than wrong in an obvious way.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from zsad_core.artifacts import MANIFEST_FILE, load_manifest_json, sha256_file
from zsad_core.backbone import ClipBackbone, VisionFeatures
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.few_shot.coreset import greedy_k_center
from zsad_core.preprocess import preprocess
from zsad_core.version import __version__

FeatureKind = Literal["raw", "projected"]
Distance = Literal["cosine", "l2"]

MEMORY_SCHEMA_VERSION = 1
MEMORY_FILE = "references.safetensors"
# Query patches x memory patches per distance block: 2^24 float32 = 64 MiB, whatever the memory size.
_BLOCK_ELEMENTS = 1 << 24


class IncompatibleReferencesError(IncompatibleWeightsError):
    """A reference memory does not belong to this backbone, input size or tap set, or its file is damaged."""

    reason = "incompatible_references"


@dataclass(frozen=True)
class MemoryOptions:
    """How a reference memory is built and queried.

    Attributes:
        taps: vision blocks whose patch tokens are kept; None uses the method's own taps.
        feature: ``raw`` residual-stream tokens (APRIL-GAN's few-shot features) or ``projected`` tokens in the
            joint image-text space (``ln_post`` then ``proj``, WinCLIP+'s patch-level association).
        distance: ``cosine`` (the CLIP few-shot papers) or ``l2`` (PatchCore).
        max_patches: above this many reference patches the memory is reduced to this many by greedy k-center
            coreset selection; each patch position keeps its features at every tap.
    """

    taps: tuple[int, ...] | None = None
    feature: FeatureKind = "raw"
    distance: Distance = "cosine"
    max_patches: int = 16384

    def __post_init__(self) -> None:
        if self.feature not in ("raw", "projected"):
            raise ValueError(f"feature must be 'raw' or 'projected', got {self.feature!r}")
        if self.distance not in ("cosine", "l2"):
            raise ValueError(f"distance must be 'cosine' or 'l2', got {self.distance!r}")
        if self.max_patches < 1:
            raise ValueError(f"max_patches must be >= 1, got {self.max_patches}")
        if self.taps is not None and not self.taps:
            raise ValueError("taps must name at least one block (or be None for the method's taps)")


@dataclass
class ReferenceMemory:
    """Patch features of the reference images, one ``(M, C)`` bank per tap sharing the same M patches.

    Attributes:
        features: tap -> ``(M, C)`` float32 bank (unit rows when ``distance == "cosine"``).
        backbone: identity (``arch[:tag]@size``) of the backbone the features come from.
        image_size: input side the references were encoded at.
        feature, distance: see :class:`MemoryOptions`.
        shots: number of reference images.
        source_patches: patches before coreset selection (``shots * grid cells``).
        coreset_radius: largest distance of a dropped patch to the kept ones, 0 when nothing was dropped.
        class_name: the product the references show, or None.
    """

    features: dict[int, torch.Tensor]
    backbone: str
    image_size: int
    feature: FeatureKind
    distance: Distance
    shots: int
    source_patches: int
    coreset_radius: float = 0.0
    class_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def taps(self) -> tuple[int, ...]:
        """The tapped blocks, ascending."""
        return tuple(sorted(self.features))

    @property
    def patches(self) -> int:
        """Patches kept per tap."""
        return next(iter(self.features.values())).shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of all banks (what one camera's memory costs on the device)."""
        return sum(bank.numel() * bank.element_size() for bank in self.features.values())

    def to(self, device: torch.device | str) -> ReferenceMemory:
        """Move the banks to ``device`` (in place) and return self."""
        self.features = {tap: bank.to(device) for tap, bank in self.features.items()}
        return self

    # -- querying ----------------------------------------------------------------------------------------
    def distance_map(self, tokens: dict[int, torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """Nearest-neighbour distance of every test patch, averaged over taps.

        Args:
            tokens: tap -> ``(B, N, C)`` patch tokens of the test batch (no CLS), from :func:`patch_tokens`.
            grid: ``(rows, cols)`` with rows * cols = N.

        Returns:
            ``(B, rows, cols)`` float32 distances.
        """
        missing = set(self.features) - set(tokens)
        if missing:
            raise ValueError(f"test tokens lack taps {sorted(missing)} of the memory")
        total = None
        for tap, bank in self.features.items():
            queries = tokens[tap]
            batch, count, width = queries.shape
            distances = nearest_distances(queries.reshape(batch * count, width), bank, self.distance)
            total = distances if total is None else total + distances
        return (total / len(self.features)).reshape(batch, *grid)

    def describe(self) -> dict[str, Any]:
        """What a manifest records; loading checks ``backbone``, ``image_size`` and ``taps`` against the model."""
        return {
            "backbone": self.backbone,
            "image_size": self.image_size,
            "taps": list(self.taps),
            "feature": self.feature,
            "distance": self.distance,
            "shots": self.shots,
            "patches": self.patches,
            "source_patches": self.source_patches,
            "coreset_radius": self.coreset_radius,
            "class_name": self.class_name,
        }


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, distance: Distance) -> torch.Tensor:
    """Distance of each query row to its nearest bank row, in blocks of queries so memory stays bounded.

    Args:
        queries: ``(Q, C)``; normalised here for ``cosine``.
        bank: ``(M, C)``; unit rows for ``cosine`` (as :func:`build_memory` stores them).
        distance: ``cosine`` -> ``(1 - max cos) / 2``; ``l2`` -> Euclidean.

    Returns:
        ``(Q,)`` float32.
    """
    queries = queries.to(bank.device, torch.float32)
    if distance == "cosine":
        queries = F.normalize(queries, dim=-1)
    step = max(1, _BLOCK_ELEMENTS // max(1, bank.shape[0]))
    out = []
    for start in range(0, queries.shape[0], step):
        block = queries[start : start + step]
        if distance == "cosine":
            out.append((1.0 - (block @ bank.T).amax(-1)) / 2.0)
        else:
            out.append(torch.cdist(block, bank).amin(-1))
    return torch.cat(out)


def patch_tokens(
    backbone: ClipBackbone, pixels: torch.Tensor, taps: Sequence[int], feature: FeatureKind
) -> tuple[dict[int, torch.Tensor], tuple[int, int]]:
    """Patch tokens ``tap -> (B, N, C)`` (CLS dropped) of normalised pixels, and the grid.

    The forward stops after the last tap (no global embedding) and runs CLIP's own path only.
    """
    features = backbone.encode_image(pixels, taps, need_global=False)
    return memory_tokens(features, taps, feature), features.grid


def memory_tokens(features: VisionFeatures, taps: Sequence[int], feature: FeatureKind) -> dict[int, torch.Tensor]:
    """Patch tokens ``tap -> (B, N, C)`` (CLS dropped) of the kind a memory holds, from a forward's features."""
    source = features.raw if feature == "raw" else features.projected
    return {tap: source[tap][:, 1:] for tap in taps}


def build_memory(
    backbone: ClipBackbone,
    images: torch.Tensor | Sequence[np.ndarray | bytes],
    taps: Sequence[int],
    options: MemoryOptions | None = None,
    *,
    class_name: str | None = None,
    batch_size: int = 8,
) -> ReferenceMemory:
    """Encode reference images at the backbone's input size and keep (a coreset of) their patch tokens.

    Args:
        backbone: the backbone the method scores with.
        images: ``(K, 3, S, S)`` normalised pixels, or RGB uint8 arrays / encoded bytes (squashed to S x S with
            the backbone's normalisation, as ``predict`` does).
        taps: blocks to keep (``options.taps`` wins when set).
        options: feature kind, distance and memory bound; None = defaults.
        class_name: recorded in the manifest.
        batch_size: reference images per forward.

    Returns:
        The :class:`ReferenceMemory`, on the backbone's device.
    """
    options = options or MemoryOptions()
    taps = tuple(sorted(set(options.taps or taps)))
    if not all(1 <= tap <= backbone.num_layers for tap in taps):
        raise ValueError(f"taps {taps} do not fit a {backbone.num_layers}-block backbone")
    if not isinstance(images, torch.Tensor):
        if len(images) == 0:
            raise ValueError("a reference memory needs at least one image")
        images, _ = preprocess(images, backbone.preprocess_config())
    if images.shape[0] == 0:
        raise ValueError("a reference memory needs at least one image")
    banks: dict[int, list[torch.Tensor]] = {tap: [] for tap in taps}
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            tokens, _ = patch_tokens(backbone, images[start : start + batch_size], taps, options.feature)
            for tap in taps:
                banks[tap].append(tokens[tap].reshape(-1, tokens[tap].shape[-1]).float())
    features = {tap: torch.cat(parts) for tap, parts in banks.items()}
    if options.distance == "cosine":
        features = {tap: F.normalize(bank, dim=-1) for tap, bank in features.items()}
    source_patches = next(iter(features.values())).shape[0]
    radius = 0.0
    if source_patches > options.max_patches:
        # One selection for all taps (PatchCore selects on its concatenated multi-layer features), so the
        # memory stays one set of patch positions.
        joint = torch.cat([features[tap] for tap in taps], dim=-1)
        coreset = greedy_k_center(joint, options.max_patches)
        features = {tap: bank[coreset.indices].contiguous() for tap, bank in features.items()}
        radius = coreset.radius
    return ReferenceMemory(
        features=features,
        backbone=backbone.identity,
        image_size=backbone.image_size,
        feature=options.feature,
        distance=options.distance,
        shots=int(images.shape[0]),
        source_patches=source_patches,
        coreset_radius=radius,
        class_name=class_name,
    )


# -- artifact format -------------------------------------------------------------------------------------------
def save_memory(memory: ReferenceMemory, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``memory`` as ``references.safetensors`` + ``manifest.json`` into ``directory`` (immutable).

    Raises:
        FileExistsError: the directory already holds a memory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, manifest_path = directory / MEMORY_FILE, directory / MANIFEST_FILE
    if tensors.exists() or manifest_path.exists():
        raise FileExistsError(f"{directory} already holds a reference memory; artifacts are immutable")
    state = {f"tap{tap}": bank.detach().cpu().contiguous() for tap, bank in memory.features.items()}
    save_file(state, str(tensors), metadata={"kind": "reference_memory"})
    manifest = {
        **memory.describe(),
        "kind": "reference_memory",
        "schema_version": MEMORY_SCHEMA_VERSION,
        "sha256": sha256_file(tensors),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "zsad_version": __version__,
        "extra": {**memory.extra, **(extra or {})},
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return directory


def load_memory(
    directory: str | Path, backbone: ClipBackbone, taps: Sequence[int] | None = None
) -> ReferenceMemory:
    """Read a memory written by :func:`save_memory` for ``backbone``, on the backbone's device.

    Args:
        directory: the memory's directory.
        backbone: the backbone it will be queried with; its identity and input size must match the manifest.
        taps: the taps the caller expects, or None to accept the recorded ones.

    Raises:
        IncompatibleReferencesError: missing or unreadable manifest, another schema, backbone, input size or
            tap set, a hash mismatch, or tensors that disagree with the manifest. Checked before reading tensors.
    """
    directory = Path(directory)
    manifest = _read_manifest(directory)
    wrong = []
    if manifest.get("backbone") != backbone.identity:
        wrong.append(f"backbone: memory {manifest.get('backbone')!r} != model {backbone.identity!r}")
    if manifest.get("image_size") != backbone.image_size:
        wrong.append(f"image_size: memory {manifest.get('image_size')!r} != model {backbone.image_size}")
    if taps is not None and manifest.get("taps") != sorted(set(taps)):
        wrong.append(f"taps: memory {manifest.get('taps')!r} != expected {sorted(set(taps))}")
    if wrong:
        raise IncompatibleReferencesError("reference memory does not fit this model: " + "; ".join(wrong))
    tensors = directory / MEMORY_FILE
    if not tensors.is_file():
        raise IncompatibleReferencesError(f"{tensors} is missing")
    actual = sha256_file(tensors)
    if actual != manifest.get("sha256"):
        raise IncompatibleReferencesError(f"{tensors} has sha256 {actual}, manifest says {manifest.get('sha256')}")
    try:
        state = load_file(str(tensors), device=str(backbone.device))
    except SafetensorError as exc:
        raise IncompatibleReferencesError(f"{tensors} is not a readable safetensors file: {exc}") from exc
    features = {int(key.removeprefix("tap")): bank for key, bank in state.items()}
    if sorted(features) != manifest["taps"] or {bank.shape[0] for bank in features.values()} != {manifest["patches"]}:
        raise IncompatibleReferencesError(f"{tensors} holds taps {sorted(features)} that disagree with its manifest")
    return ReferenceMemory(
        features=dict(sorted(features.items())),
        backbone=manifest["backbone"],
        image_size=manifest["image_size"],
        feature=manifest["feature"],
        distance=manifest["distance"],
        shots=manifest["shots"],
        source_patches=manifest["source_patches"],
        coreset_radius=manifest["coreset_radius"],
        class_name=manifest.get("class_name"),
        extra=manifest.get("extra", {}),
    )


def _read_manifest(directory: Path) -> dict[str, Any]:
    manifest = load_manifest_json(directory, IncompatibleReferencesError, "a reference memory needs it")
    path = directory / MANIFEST_FILE
    if manifest.get("kind") != "reference_memory" or manifest.get("schema_version") != MEMORY_SCHEMA_VERSION:
        raise IncompatibleReferencesError(
            f"{path} is not a reference memory of schema {MEMORY_SCHEMA_VERSION} "
            f"(kind {manifest.get('kind')!r}, schema {manifest.get('schema_version')!r})"
        )
    return manifest
