"""Few-shot references for every method: a memory of normal patch features fused with the zero-shot map.

    from zsad_core.few_shot import with_references
    method = with_references(zsad_core.load_method("clip-ad", class_name="bottle"), good_images)
    result = method.predict(images)            # the same AnomalyResult, maps and scores now use the references
"""

from zsad_core.few_shot.coreset import Coreset, greedy_k_center
from zsad_core.few_shot.fusion import fuse_maps, fuse_scores
from zsad_core.few_shot.memory import (
    IncompatibleReferencesError,
    MemoryOptions,
    ReferenceMemory,
    build_memory,
    load_memory,
    nearest_distances,
    save_memory,
)
from zsad_core.few_shot.method import FewShotMethod, FusionOptions, with_references

__all__ = [
    "Coreset",
    "FewShotMethod",
    "FusionOptions",
    "IncompatibleReferencesError",
    "MemoryOptions",
    "ReferenceMemory",
    "build_memory",
    "fuse_maps",
    "fuse_scores",
    "greedy_k_center",
    "load_memory",
    "nearest_distances",
    "save_memory",
    "with_references",
]
