"""Per-camera regions from YAML: ``pixel_threshold`` and ``min_area`` are the settings until a live change."""

from __future__ import annotations

import pytest
import yaml

from services.config import ConfigError, load_config
from services.stores.camera_settings import CameraSettings

CAMERA = {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}


def test_yaml_pixel_threshold_and_min_area_become_the_cameras_settings(tmp_path) -> None:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"line1": {**CAMERA, "pixel_threshold": 0.3, "min_area": 12},
                                                "line2": CAMERA}}))
    config = load_config(path)
    settings = CameraSettings.from_config("line1", config.cameras["line1"])
    assert (settings.pixel_threshold, settings.min_area, settings.version) == (0.3, 12, None)
    assert CameraSettings.from_config("line2", config.cameras["line2"]).pixel_threshold is None  # no regions


def test_bad_region_settings_name_the_field(tmp_path) -> None:
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"line1": {**CAMERA, "min_area": -1}}}))
    with pytest.raises(ConfigError, match=r"cameras\.line1\.min_area"):
        load_config(path)
