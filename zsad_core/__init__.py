"""zsad_core: zero-shot anomaly detection and segmentation with CLIP, as a plain PyTorch library.

No Ray, Kafka or Redis here: every method runs on a laptop CPU from a notebook with nothing else started::

    import zsad_core
    method = zsad_core.load_method("winclip", class_name="bottle")
    result = method.predict([rgb_array])          # result.maps (B, H, W), result.scores (B,)
"""

from zsad_core.methods import AnomalyResult, ZeroShotMethod, list_methods, load_method
from zsad_core.version import __version__

__all__ = ["AnomalyResult", "ZeroShotMethod", "__version__", "list_methods", "load_method"]
