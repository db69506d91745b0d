"""Zero-shot anomaly detection methods behind one interface (see ``load_method``)."""

from zsad_core.methods.base import MethodConfig, ZeroShotMethod
from zsad_core.methods.registry import (
    METHODS,
    get_method_config,
    get_method_spec,
    list_methods,
    load_method,
    method_backbone_config,
    register_method,
)
from zsad_core.methods.result import AnomalyResult
from zsad_core.methods.stages import ImageStage, StageOutputs, TowerPass, encode_shared

__all__ = [
    "METHODS",
    "AnomalyResult",
    "ImageStage",
    "MethodConfig",
    "StageOutputs",
    "TowerPass",
    "ZeroShotMethod",
    "encode_shared",
    "get_method_config",
    "get_method_spec",
    "list_methods",
    "load_method",
    "method_backbone_config",
    "register_method",
]
