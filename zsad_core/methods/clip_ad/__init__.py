"""CLIP-AD (Chen et al., arXiv 2311.00453): ``clip-ad`` (SDP, training-free) and ``clip-ad+`` (SDP+).

Importing this package registers both methods.
"""

from zsad_core.methods.clip_ad.model import ClipAD, ClipADConfig, ClipADPlus, ClipADPlusConfig
from zsad_core.methods.clip_ad.rvs import RVS_METHODS, encode_state_texts, representative_vector
from zsad_core.methods.clip_ad.surgery import feature_surgery, linear_probe_probs, surgery_map

__all__ = [
    "RVS_METHODS",
    "ClipAD",
    "ClipADConfig",
    "ClipADPlus",
    "ClipADPlusConfig",
    "encode_state_texts",
    "feature_surgery",
    "linear_probe_probs",
    "representative_vector",
    "surgery_map",
]
