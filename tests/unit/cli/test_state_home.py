"""One state home: the stack's config and relative registry paths are found from any working directory."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from services.cli.main import main
from services.cli.options import config_from_args
from services.config import ConfigError, load_config
from services.state_home import stack_config_path, state_home

CAMERA = {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}


def _stack_config(home: Path) -> None:
    (home / "stack").mkdir(parents=True)
    (home / "stack" / "config.yaml").write_text(yaml.safe_dump({
        "cameras": {"line7": CAMERA}, "redis": {"url": "redis://127.0.0.1:6390/0", "password": "p" * 16},
    }))  # fmt: skip


def test_the_running_stacks_config_is_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path / "home"))
    _stack_config(tmp_path / "home")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = config_from_args(argparse.Namespace(config=None))
    assert list(config.cameras) == ["line7"] and config.redis.password.get_secret_value() == "p" * 16


def test_no_stack_and_no_config_is_an_error_not_the_defaults(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path / "empty"))
    with pytest.raises(ConfigError, match=f"no local stack config at {tmp_path / 'empty' / 'stack' / 'config.yaml'}"):
        config_from_args(argparse.Namespace(config=None))
    assert main(["results", "--camera", "cam1"]) == 2
    err = capsys.readouterr().err
    assert "zsad up" in err and "--config FILE" in err and err.count("\n") == 1


def test_state_dir_option_sets_the_home_for_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path / "other"))
    assert main(["--state-dir", str(tmp_path / "chosen"), "version"]) == 0
    assert state_home() == tmp_path / "chosen" and stack_config_path() == tmp_path / "chosen" / "stack" / "config.yaml"


def test_default_home_follows_xdg_and_never_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("ZSAD_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_home() == tmp_path / "xdg" / "zsad"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert state_home() == tmp_path / "user" / ".local" / "state" / "zsad"


def test_relative_registry_paths_lie_in_the_state_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ZSAD_HOME", str(tmp_path))
    monkeypatch.chdir("/")
    registry = load_config().registry
    assert (registry.root, registry.cache_dir) == (str(tmp_path / "registry"), str(tmp_path / "registry-cache"))
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({"cameras": {"cam1": CAMERA},
                                    "registry": {"root": "redis://", "cache_dir": "/var/cache/zsad"}}))
    registry = load_config(path).registry
    assert (registry.root, registry.cache_dir) == ("redis://", "/var/cache/zsad")
    path.write_text(yaml.safe_dump({"cameras": {"cam1": CAMERA}}))  # the field defaults are anchored too
    assert load_config(path).registry.root == str(tmp_path / "registry")
