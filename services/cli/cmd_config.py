"""``zsad config validate FILE`` and ``zsad config show``: check a file before anything starts, see what runs.

Why ``show`` says where each value came from: three layers decide a value (field default, the YAML file,
``ZSAD_*`` environment variables), and a value that is not what the file says is otherwise a mystery.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

from services.cli.options import add_config_option, config_from_args
from services.state_home import stack_config_path

SECRET_MASK = "********"  # noqa: S105 - what a secret is shown as, not a secret


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad config validate`` and ``zsad config show``."""
    config = commands.add_parser("config", help="check a configuration file, or show the effective values")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="validate a YAML file (with ZSAD_* overrides) and say what it runs")
    validate.add_argument("file", help="the configuration YAML")
    validate.set_defaults(func=cmd_validate)
    show = actions.add_parser("show", help="every effective value, secrets masked, with where it came from")
    add_config_option(show)
    show.add_argument("--json", action="store_true", help="print a JSON list of {key, value, source}")
    show.set_defaults(func=cmd_show)


def cmd_validate(args: argparse.Namespace) -> int:
    """Load the file as every process would; ConfigError (exit 2) names the file and each faulty field."""
    from services.config import load_config

    config = load_config(args.file)
    cameras = ", ".join(f"{name} ({camera.method})" for name, camera in config.cameras.items())
    weights = "RANDOM CLIP weights" if config.serving.random_weights else "CLIP weights from a file or tag"
    print(f"{args.file}: valid; cameras {cameras}; {weights}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The effective configuration, one key per line: value and source (default, file, environment)."""
    path = Path(args.config) if args.config else stack_config_path()
    config = config_from_args(args)
    document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    rows = [{"key": key, "value": value, "source": _source(key, document, path)}
            for key, value in _leaves(config.model_dump(mode="json"))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["key"]) for row in rows)
    for row in rows:
        print(f"{row['key']:<{width}}  {json.dumps(row['value'])}  ({row['source']})")
    return 0


def _leaves(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Dotted keys of the configuration's leaves; dicts that are values (options, resources) stay whole."""
    from services.config_reference import known_key

    leaves: list[tuple[str, Any]] = []
    for name, value in values.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict) and value and all(known_key(f"{path}.{child}") for child in value):
            leaves += _leaves(value, f"{path}.")
        else:
            leaves.append((path, SECRET_MASK if value == "**********" else value))
    return leaves


def _source(key: str, document: dict[str, Any], path: Path) -> str:
    parts = key.split(".")
    variable = "ZSAD_" + "__".join(part.upper() for part in parts)
    if any(name.upper() == variable for name in os.environ):
        return f"environment {variable}"
    node: Any = document
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return "default"
        node = node[part]
    return f"file {path}"
