"""Every ``zsad ...`` the documentation shows is accepted by the real parser, so no page teaches a dead spelling.

Command lines in code blocks must parse completely (``[optional]`` brackets dropped, ``a|b`` tried one by one);
inline spans such as `zsad eval --normalize per_class_minmax` are fragments: their sub-commands and options must
exist.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[3]
PAGES = sorted([ROOT / "README.md", ROOT / "deploy" / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```.*?$(.*?)^```", re.M | re.S)
INLINE = re.compile(r"`(zsad(?: [^`]*)?)`")


def _code_lines(text: str) -> Iterator[str]:
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        # A line with box-drawing arrows is a diagram that starts with a command name, not a command line.
        yield from (line.strip() for line in joined.splitlines()
                    if line.strip().startswith("zsad ") and line.isascii())


def _variants(line: str) -> list[list[str]]:
    """The argument lists a documented line stands for: brackets dropped, each ``a|b`` alternative tried."""
    words = shlex.split(line.replace("[", " ").replace("]", " "), comments=True)[1:]
    choices = [word.split("|") if "|" in word and not word.startswith("-") else [word] for word in words]
    return [list(combination) for combination in itertools.product(*choices)]


def _documented(pattern: str) -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        lines = _code_lines(text) if pattern == "code" else INLINE.findall(FENCE.sub("", text))
        found += [(page.relative_to(ROOT).as_posix(), line) for line in lines]
    return found


@pytest.mark.parametrize(("page", "line"), _documented("code"))
def test_documented_command_lines_parse(page: str, line: str) -> None:
    for argv in _variants(line):
        errors = io.StringIO()
        try:
            with contextlib.redirect_stderr(errors):
                build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{page}: `{line}` does not parse as zsad {shlex.join(argv)}: {errors.getvalue().strip()}")
        assert "deprecated" not in errors.getvalue(), f"{page}: `{line}` uses a deprecated spelling"


def _sub_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


@pytest.mark.parametrize(("page", "fragment"), _documented("inline"))
def test_documented_command_fragments_name_real_commands_and_options(page: str, fragment: str) -> None:
    for argv in _variants(fragment):
        parser = build_parser()
        words = iter(argv)
        for word in words:
            if word.startswith("-"):
                option = word.split("=", 1)[0]
                assert option in parser._option_string_actions, f"{page}: `{fragment}`: {option} is not an option"
                action = parser._option_string_actions[option]
                assert "deprecated" not in (action.help or "") or option == action.option_strings[0], (
                    f"{page}: `{fragment}` uses the deprecated {option}")
            elif word in _sub_parsers(parser):
                parser = _sub_parsers(parser)[word]


def test_the_pages_show_commands_at_all() -> None:
    assert len(_documented("code")) > 30 and len(_documented("inline")) > 30
