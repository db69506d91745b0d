"""VCP-CLIP, registered as ``vcp-clip``: Pre-VCP prompts (``prompts``) and the model; Post-VCP is
:class:`zsad_core.methods.heads.TextQueryAttention`."""

from zsad_core.methods.vcp_clip.model import VcpClip, VcpClipConfig
from zsad_core.methods.vcp_clip.prompts import DeepTextPrompts, PromptLayout, VisualContext, encode_prompts

__all__ = [
    "DeepTextPrompts",
    "PromptLayout",
    "VcpClip",
    "VcpClipConfig",
    "VisualContext",
    "encode_prompts",
]
