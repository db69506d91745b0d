"""The shared CLIP backbone: build by name, load weights safely, tap tokens, run the V-V path, encode text."""

from zsad_core.backbone.architectures import TINY_ARCH, BackboneName, parse_backbone_name
from zsad_core.backbone.clip import BackboneConfig, ClipBackbone, build_backbone
from zsad_core.backbone.pos_embed import resize_pos_embed
from zsad_core.backbone.vision import SurgeryConfig, VisionFeatures
from zsad_core.backbone.weights import WeightSource, load_state_dict_file

__all__ = [
    "TINY_ARCH",
    "BackboneConfig",
    "BackboneName",
    "ClipBackbone",
    "SurgeryConfig",
    "VisionFeatures",
    "WeightSource",
    "build_backbone",
    "load_state_dict_file",
    "parse_backbone_name",
    "resize_pos_embed",
]
