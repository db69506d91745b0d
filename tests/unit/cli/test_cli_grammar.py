"""One CLI grammar: every option documented and range-checked, switches that mean the same everywhere."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from services.cli.main import build_parser, main
from services.cli.options import DeprecatedSpellings
from zsad_core.version import __version__

TINY = ["--backbone", "zsad-tiny-vit", "--random-weights", "--image-size", "64"]


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub-)command parser, with the words that reach it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name))


def _arguments() -> Iterator[tuple[str, argparse.Action]]:
    for path, parser in _commands(build_parser()):
        for action in parser._actions:
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                yield f"zsad {' '.join(path)} {'/'.join(action.option_strings) or action.dest}", action


def test_every_option_and_argument_has_help() -> None:
    missing = [name for name, action in _arguments() if not action.help or action.help == argparse.SUPPRESS]
    assert not missing, missing


def test_every_numeric_option_is_range_checked() -> None:
    bare = [name for name, action in _arguments() if action.type in (int, float)]
    assert not bare, f"use a checked type from services.arg_types: {bare}"


def test_json_is_a_switch_everywhere() -> None:
    takes_files = [name for name, action in _arguments()
                   if "--json" in action.option_strings and action.nargs not in (0, "?")]
    assert not takes_files, takes_files


def test_ray_is_addressed_with_address_and_old_spellings_warn(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    old = [action for _, action in _arguments() if {"--ray-address", "--dashboard-url"} & set(action.option_strings)]
    assert old and all(isinstance(action, DeprecatedSpellings) and action.replacement == "--address" for action in old)
    args = parser.parse_args(["replay", "--camera", "c", "--from-offset", "0", "--ray-address", "10.0.0.1:6379"])
    assert args.address == "10.0.0.1:6379"
    assert "zsad: warning: --ray-address is deprecated, use --address" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "--dataset", "synthetic", "--batch-size", "0"], "argument --batch-size: must be >= 1, got 0"),
    (["produce", "--camera", "c", "--synthetic", "--fps", "-1"], "argument --fps: must be a finite number >= 0"),
    (["calibrate", "--camera", "c", "--good", "d", "--false-reject", "1.5"], "must lie strictly between 0 and 1"),
    (["infer", "a.png", "--out", "o", "--image-size", "-64"], "argument --image-size: must be >= 1, got -64"),
])
def test_out_of_range_numbers_are_refused_naming_the_option(argv, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_bare_zsad_prints_help_and_exits_2_and_version_is_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"zsad-stream {__version__}"


def test_reproduce_accepts_no_options_it_would_ignore() -> None:
    reproduce = dict(_commands(build_parser()))[("reproduce",)]
    options = {option for action in reproduce._actions for option in action.option_strings}
    assert not {"--option", "--class-name", "--domain"} & options
    assert {"--device", "--precision", "--json", "--out"} <= options


def test_eval_json_goes_to_stdout_and_the_old_file_spelling_still_writes_the_file(tmp_path, capsys) -> None:
    dataset = ["--dataset", "synthetic:classes=1,per_class=2,size=64", "--num-workers", "0"]
    assert main(["eval", "--method", "winclip", *TINY, *dataset, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["random_weights"] is True and "pixel_auroc" in report["mean"]
    assert main(["eval", "--method", "winclip", *TINY, *dataset, "--json", str(tmp_path / "r.json")]) == 0
    captured = capsys.readouterr()
    assert "--json FILE is deprecated, use --out" in captured.err and "pixel AUROC" in captured.out
    assert json.loads((tmp_path / "r.json").read_text()).keys() == report.keys()  # random weights: values differ


def test_device_defaults_to_auto_everywhere() -> None:
    # `zsad gateway gige --device` names the camera (Aravis device id), as GigE Vision tools call it.
    devices = {name: action.default for name, action in _arguments()
               if "--device" in action.option_strings and not name.startswith("zsad gateway gige")}
    assert devices and set(devices.values()) == {"auto"}, devices


def test_versions_are_positional_arguments_in_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["registry", "show", "clip-ad", "v2"]).version == "v2"
    assert parser.parse_args(["reference", "show", "--camera", "c", "r2"]).version == "r2"
    assert parser.parse_args(["calibration", "show", "--camera", "c", "c2"]).version == "c2"
    assert parser.parse_args(["calibration", "show", "--camera", "c", "--version", "c3"]).version == "c3"
    assert "--version is deprecated, use the VERSION argument" in capsys.readouterr().err
    assert getattr(parser.parse_args(["calibration", "show", "--camera", "c"]), "version", None) is None
