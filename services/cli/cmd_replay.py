"""``zsad replay``: re-score a camera's frames from Kafka through the running Serve inspector.

Why a command: after Redis lost results (no persistence, a wiped volume, a restore from an old backup) the
frames are still in Kafka but their offsets are committed, so ingest will not read them again. Replay is the
operator's repair; see :mod:`services.replay` for why it is safe and what it does to event streams.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from datetime import UTC, datetime

from services.arg_types import non_negative_int
from services.cli.options import add_address_option, add_config_option, config_from_args


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad replay``."""
    replay = commands.add_parser(
        "replay", help="re-score a camera's frames from Kafka (restores results Redis lost; stored ones are kept)"
    )
    add_config_option(replay)
    replay.add_argument("--camera", required=True, help="camera id (as in the config)")
    start = replay.add_mutually_exclusive_group(required=True)
    start.add_argument("--since", type=parse_time, metavar="TIME",
                       help="frames the broker received from TIME on: ISO 8601 (UTC unless it has an offset) "
                            "or seconds since the epoch")  # fmt: skip
    start.add_argument("--from-offset", type=non_negative_int, metavar="N",
                       help="from offset N of the camera's partition")
    add_address_option(replay, "Ray cluster of the Serve app (default: the local stack's)")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(func=cmd_replay)


def parse_time(text: str) -> float:
    """``2026-11-30T06:00:00``, ``2026-11-30 06:00:00+01:00`` or ``1795845600`` as seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time or epoch seconds: {text!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay the range and print what was restored; exit 1 if the model failed on any frame."""
    from services.cli.serve_calls import serve_deployment
    from services.replay import replay_frames

    config = config_from_args(args)
    with serve_deployment("Inspector", args.address) as inspector:
        report = replay_frames(config, args.camera, inspector=inspector, since=args.since, from_offset=args.from_offset)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(
            f"replayed {report.frames} frames of {report.camera} (partition {report.partition}, offsets "
            f"{report.first_offset} to {report.end_offset - 1}): {report.restored} restored, "
            f"{report.already_stored} already stored, {report.invalid} invalid, {report.failed} failed"
        )
        for failure in report.failures:
            print(f"  failed: {failure}")
    return 1 if report.failed else 0
