"""zsad_core: zero-shot anomaly detection and segmentation with CLIP, as a plain PyTorch library.

No Ray, Kafka or Redis here: every method runs on a laptop CPU from a notebook with nothing else started.
"""

from zsad_core.version import __version__

__all__ = ["__version__"]
