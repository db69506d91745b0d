"""Schedules check their commands against a declaration of their own; it must accept what the CLI accepts."""

from __future__ import annotations

import argparse

import pytest

from services.cli.main import build_parser
from services.stores.schedules import SCHEDULABLE_COMMANDS, ScheduleError, check_command


def _sub_parser(name: str) -> argparse.ArgumentParser:
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    return commands.choices[name]


def _cli_options(name: str) -> set[tuple[tuple[str, ...], bool, object, bool]]:
    """(names, takes a value, value type, required) of every option of ``zsad <name>`` but ``--help``."""
    return {
        (tuple(action.option_strings), action.nargs != 0, action.type or str, action.required)
        for action in _sub_parser(name)._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
    }


@pytest.mark.parametrize("name", sorted(SCHEDULABLE_COMMANDS))
def test_the_declaration_of_a_schedulable_command_matches_the_cli_parser(name: str) -> None:
    declared = {
        (option.names, option.takes_value, option.value_type, option.required)
        for option in SCHEDULABLE_COMMANDS[name].options
    }
    assert declared == _cli_options(name)


def test_every_schedulable_command_is_a_cli_command_without_positional_arguments() -> None:
    for name in SCHEDULABLE_COMMANDS:
        assert not [action for action in _sub_parser(name)._actions if not action.option_strings]


def test_commands_are_checked_like_the_cli_would_parse_them() -> None:
    train = ["train", "--train-data", "synthetic", "--eval-data=synthetic"]
    assert check_command([*train, "--epochs", "2"]) == [*train, "--epochs", "2", "--address", "auto"]
    assert check_command([*train, "--address", "10.0.0.1:6379"]) == [*train, "--address", "10.0.0.1:6379"]
    assert check_command([*train, "--ray-address", "10.0.0.1:6379"]) == [*train, "--ray-address", "10.0.0.1:6379"]
    with pytest.raises(ScheduleError, match="invalid positive_int value: 'two'"):
        check_command([*train, "--epochs", "two"])
    with pytest.raises(ScheduleError, match="the following arguments are required: --eval-data"):
        check_command(["train", "--train-data", "synthetic"])
    with pytest.raises(ScheduleError, match="unrecognized arguments: --workers-count"):
        check_command([*train, "--workers-count", "2"])
    with pytest.raises(ScheduleError, match=r"schedules run train or version, not 'eval'"):
        check_command(["eval", "--dataset", "synthetic"])
    with pytest.raises(ScheduleError, match="it asks for help"):
        check_command(["train", "--help"])
