"""`zsad camera show` says where each value came from: the YAML file, a live change, or a calibration."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from services.cli.main import main
from services.config import ZsadConfig
from services.stores.camera_settings import CameraSettings, setting_sources

CAMERA = {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5, "min_area": 10}
YAML = CameraSettings.from_config("cam1", ZsadConfig(cameras={"cam1": CAMERA}).cameras["cam1"])


def version(previous: CameraSettings, number: int, **changes: object) -> CameraSettings:
    return dataclasses.replace(previous, version=f"s{number}", **changes)


def test_without_a_stored_version_every_value_is_yaml() -> None:
    assert set(setting_sources(YAML, []).values()) == {"yaml"}


def test_a_live_change_and_a_calibration_are_told_apart_from_the_yaml_values() -> None:
    s1 = version(YAML, 1, roi=(0, 0, 64, 64))  # zsad camera set --roi
    s2 = version(s1, 2, threshold=-0.25, pixel_threshold=0.1, calibration="c1")  # zsad calibrate
    s3 = version(s2, 3, paused=True)  # zsad camera pause: the calibration stays
    sources = setting_sources(YAML, [s1, s2, s3])
    assert sources == {"threshold": "calibration", "pixel_threshold": "calibration", "min_area": "yaml",
                       "roi": "live", "paused": "live", "prompt_version": "yaml"}  # fmt: skip
    s4 = version(s3, 4, threshold=0.3, calibration=None)  # a threshold set by hand detaches the calibration
    assert setting_sources(YAML, [s1, s2, s3, s4])["threshold"] == "live"
    assert setting_sources(YAML, [s1, s2, s3, s4])["pixel_threshold"] == "calibration"  # still c1's value


def test_a_calibration_that_keeps_the_old_threshold_still_owns_it() -> None:
    s1 = version(YAML, 1, calibration="c1")  # the calibration chose 0.5, the YAML value
    assert setting_sources(YAML, [s1])["threshold"] == "calibration"


def test_a_yaml_edit_after_the_first_change_shows_the_stored_value_as_live() -> None:
    s1 = version(YAML, 1, paused=True)  # copied min_area 10 from the file then
    edited = dataclasses.replace(YAML, min_area=50)  # the file says 50 now; the stored record still wins
    assert setting_sources(edited, [s1])["min_area"] == "live"


class _StoredSettings:
    """The Redis reads of a camera's settings history (lindex, lrange, get), from fixed records."""

    def __init__(self, records: list[CameraSettings]) -> None:
        self.records = {f"zsad:registry:camera:cam1:settings:{r.version}": json.dumps(r.to_dict()) for r in records}
        self.history = [r.version.encode() for r in records if r.version]

    def lindex(self, key: str, index: int) -> bytes | None:
        return self.history[index] if key.endswith("settings:history") and self.history else None

    def lrange(self, key: str, start: int, end: int) -> list[bytes]:
        return list(self.history) if key.endswith("settings:history") else []

    def get(self, key: str) -> str | None:
        return self.records.get(key)

    def close(self) -> None:
        pass


def test_camera_show_prints_the_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "zsad.yaml"
    config_file.write_text(yaml.safe_dump({"cameras": {"cam1": CAMERA}}))
    s1 = version(YAML, 1, threshold=-0.25, calibration="c1")
    monkeypatch.setattr("services.stores.result_store.connect", lambda config: _StoredSettings([s1]))
    assert main(["camera", "show", "--camera", "cam1", "--config", str(config_file)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["threshold"] == -0.25
    assert shown["sources"]["threshold"] == "calibration" and shown["sources"]["min_area"] == "yaml"
