"""Live settings values are checked before Redis is touched: a boolean is not a number."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from services.config import ZsadConfig
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.camera_settings import CameraSettingsError, CameraSettingsStore


@pytest.mark.parametrize("field", ["threshold", "pixel_threshold", "min_area"])
@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_is_refused_where_a_number_is_expected(tmp_path: Path, field: str, value: bool) -> None:
    config = ZsadConfig(cameras={"cam1": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}})
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)  # never reached: refused first
    store = CameraSettingsStore(ArtifactRegistry(tmp_path, unreachable), config)
    with pytest.raises(CameraSettingsError, match=f"{field} must be a number, got {value}"):
        store.update("cam1", {field: value}, actor="test", reason="typo")


def test_a_live_threshold_outside_the_methods_score_range_is_refused(tmp_path: Path) -> None:
    config = ZsadConfig(cameras={"cam1": {"method": "anoclip", "class_name": "object", "threshold": 0.5},
                                 "cam2": {"method": "clip-ad", "class_name": "object", "threshold": 0.5}})
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.1)  # never reached: refused first
    store = CameraSettingsStore(ArtifactRegistry(tmp_path, unreachable), config)
    with pytest.raises(CameraSettingsError) as info:
        store.update("cam1", {"threshold": -0.2}, actor="test", reason="calibrated elsewhere")
    assert str(info.value) == (
        "invalid settings for cam1: threshold -0.2 is outside the score range of method anoclip, [0, 1]"
    )
    with pytest.raises(CameraSettingsError, match=r"cam2: threshold 6 is outside .* clip-ad, \[-4, 5\]"):
        store.update("cam2", {"threshold": 6.0}, actor="test", reason="typo")
