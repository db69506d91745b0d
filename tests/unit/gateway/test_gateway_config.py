"""The ``gateways:`` section and the command line that builds the same entry."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.cli.main import main
from services.config import ConfigError, load_config

CAMERA = {"method": "clip-ad", "class_name": "object", "threshold": 0.5}


def _config(tmp_path: Path, gateways: dict[str, object]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam1": CAMERA}, "gateways": gateways}))
    return path


def test_a_folder_entry_is_read_with_defaults(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, {"cam1": {"kind": "folder", "path": "/data/cam1"}}))
    entry = config.gateways["cam1"]
    assert (entry.path, entry.settle_s, entry.encode, entry.spool_max_bytes) == ("/data/cam1", 1.0, "keep", 1 << 30)


def test_a_config_without_gateways_still_loads() -> None:
    assert load_config(None).gateways == {}


@pytest.mark.parametrize(("entry", "message"), [
    ({"kind": "folder"}, "a folder gateway needs path"),
    ({"kind": "stream", "path": "/x"}, "a stream gateway needs url"),
    ({"kind": "folder", "path": "/x", "jpeg_quality": 0}, "gateways.cam1.jpeg_quality"),
    ({"kind": "folder", "path": "/x", "setle_s": 1}, "gateways.cam1.setle_s"),
    ({"kind": "usb", "path": "/x"}, "gateways.cam1.kind"),
])  # fmt: skip
def test_a_bad_entry_names_the_field(tmp_path: Path, entry: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_config(tmp_path, {"cam1": entry}))


def test_the_commands_refuse_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config(tmp_path, {})
    assert main(["gateway", "run", "--config", str(config), "--camera", "cam1"]) == 2
    assert main(["gateway", "folder", "--config", str(config), "--camera", "cam1", "--path",
                 str(tmp_path / "absent")]) == 2  # fmt: skip
    errors = capsys.readouterr().err.splitlines()
    assert errors == [
        "zsad: error (bad_config): camera 'cam1' has no entry under gateways: (configured: none)",
        f"zsad: error (bad_config): gateway of camera cam1: folder {tmp_path / 'absent'} does not exist",
    ]
    with pytest.raises(SystemExit) as refused:  # a range the parser checks, as for every numeric option
        main(["gateway", "folder", "--config", str(config), "--camera", "cam1", "--path", str(tmp_path),
              "--jpeg-quality", "101"])  # fmt: skip
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith("argument --jpeg-quality: must lie in 1..100, got 101")
