"""zsad_core: zero-shot anomaly detection and segmentation with CLIP, as a plain PyTorch library.

No Ray, Kafka or Redis here: every method runs on a laptop CPU from a notebook with nothing else started::

    import zsad_core
    method = zsad_core.load_method("winclip", class_name="bottle")
    result = method.predict([rgb_array])          # result.maps (B, H, W), result.scores (B,)

The method API is imported lazily, so light users of the package (message validation, errors, metrics in a
Kafka ingest process) do not pay torch's import time and memory.
"""

from typing import Any

from zsad_core.version import __version__

_LAZY = {"AnomalyResult", "ZeroShotMethod", "list_methods", "load_method"}

__all__ = ["AnomalyResult", "ZeroShotMethod", "__version__", "list_methods", "load_method"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from zsad_core import methods

        return getattr(methods, name)
    raise AttributeError(f"module 'zsad_core' has no attribute {name!r}")
