"""VCP-CLIP, registered as ``vcp-clip``: Pre-VCP prompts (``prompts``), Post-VCP attention (``attention``), model."""

from zsad_core.methods.vcp_clip.attention import PostVcpAttention
from zsad_core.methods.vcp_clip.model import VcpClip, VcpClipConfig
from zsad_core.methods.vcp_clip.prompts import DeepTextPrompts, PromptLayout, VisualContext, encode_prompts

__all__ = [
    "DeepTextPrompts",
    "PostVcpAttention",
    "PromptLayout",
    "VcpClip",
    "VcpClipConfig",
    "VisualContext",
    "encode_prompts",
]
