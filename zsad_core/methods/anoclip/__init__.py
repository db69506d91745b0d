"""AnoCLIP / AnoCLIP+ (``anoclip``, ``anoclip+``): importing this package registers both methods."""

from zsad_core.methods.anoclip.model import (
    AnoCLIP,
    AnoCLIPConfig,
    AnoCLIPPlus,
    AnoCLIPPlusConfig,
    anomaly_map,
    view_score,
)

__all__ = ["AnoCLIP", "AnoCLIPConfig", "AnoCLIPPlus", "AnoCLIPPlusConfig", "anomaly_map", "view_score"]
