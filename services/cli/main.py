"""The ``zsad`` command line.

Each sub-command lives in a function that parses nothing itself: ``main`` builds the argparse tree, so
``zsad --help`` lists every command with one line each, and imports of heavy modules (torch, ray) happen
inside the commands that need them, keeping ``zsad --help`` and ``zsad version`` instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from services.cli import (
    cmd_camera,
    cmd_config,
    cmd_demo,
    cmd_dlq,
    cmd_gateway,
    cmd_inference,
    cmd_reference,
    cmd_registry,
    cmd_replay,
    cmd_results,
    cmd_schedule,
    cmd_stack,
    cmd_train,
)
from services.cli.unreachable import describe_unreachable
from services.state_home import HOME_ENV
from zsad_core.errors import ZsadError
from zsad_core.version import __version__

Handler = Callable[[argparse.Namespace], int]


def _cmd_version(args: argparse.Namespace) -> int:
    print(f"zsad-stream {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser; sub-commands register their handler as ``func``."""
    parser = argparse.ArgumentParser(
        prog="zsad",
        description="Zero-shot visual inspection: CLIP anomaly detection on streamed frames.",
    )
    parser.add_argument("--version", action="version", version=f"zsad-stream {__version__}",
                        help="print the version and exit")
    parser.add_argument("--state-dir", help=f"state home of this command and all it starts (sets {HOME_ENV}; "
                                            "default: $ZSAD_HOME, else $XDG_STATE_HOME/zsad or ~/.local/state/zsad)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = commands.add_parser("version", help="print the version")
    version.set_defaults(func=_cmd_version)
    for module in (cmd_inference, cmd_demo, cmd_results, cmd_replay, cmd_registry, cmd_reference, cmd_camera, cmd_stack,
                   cmd_train, cmd_schedule, cmd_gateway, cmd_config, cmd_dlq):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zsad`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.state_dir:  # through the environment, so the stack process, Ray workers and jobs share it
        os.environ[HOME_ENV] = str(Path(args.state_dir).expanduser().absolute())
    handler: Handler | None = getattr(args, "func", None)
    if handler is None:  # a bare `zsad` is a usage error, as in git or ray: help on stderr, exit 2
        parser.print_help(sys.stderr)
        return 2
    try:
        return handler(args)
    except ZsadError as exc:  # bad input or unavailable weights: a clear message, not a traceback
        print(f"zsad: error ({exc.reason}): {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        message = describe_unreachable(exc, args)  # Redis, Kafka or Ray down: which and where, in one line
        if message is None:
            raise
        print(f"zsad: error (unreachable): {' '.join(message.split())}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
