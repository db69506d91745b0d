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

__all__ = [
    "METHODS",
    "AnomalyResult",
    "MethodConfig",
    "ZeroShotMethod",
    "get_method_config",
    "get_method_spec",
    "list_methods",
    "load_method",
    "method_backbone_config",
    "register_method",
]
