"""ViP²-CLIP, registered as ``vip2-clip`` when this package is imported."""

from zsad_core.methods.vip2_clip.model import (
    Vip2Clip,
    Vip2ClipConfig,
    anomaly_map,
    convert_official_checkpoint,
    image_logits,
)
from zsad_core.methods.vip2_clip.prompts import ClassPrompter, StatePrompts

__all__ = [
    "ClassPrompter",
    "StatePrompts",
    "Vip2Clip",
    "Vip2ClipConfig",
    "anomaly_map",
    "convert_official_checkpoint",
    "image_logits",
]
