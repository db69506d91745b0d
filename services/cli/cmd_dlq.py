"""``zsad dlq list|show|resend``: the dead letters, and sending a letter's record again once its cause is fixed.

Why in the CLI: every refused record ends as one dead letter (:mod:`services.frame_path.dead_letters`), and an
operator looking for why a camera's frames have no result should not need to write a Kafka consumer. A re-send
is recorded in the audit stream (``zsad registry audit``), since it puts a frame back on the line's record.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from services.arg_types import positive_int
from services.cli.options import add_actor_option, add_config_option, config_from_args

if TYPE_CHECKING:
    from services.frame_path.dead_letters import Letter, Resent

COLUMNS = ("LETTER", "TIME", "CAMERA", "FRAME", "REASON", "SOURCE", "BYTES")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad dlq``."""
    dlq = commands.add_parser("dlq", help="dead letters: list, show, resend (records that were refused, and why)")
    actions = dlq.add_subparsers(dest="dlq_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="the dead letters, oldest first, by camera and reason")
    listing.add_argument("--camera", help="only this camera's letters")
    listing.add_argument("--cause", help="only letters refused for this reason code (their zsad-dlq-reason, e.g. "
                                         "not_an_image, conflicting_frame_id)")
    listing.add_argument("--limit", type=positive_int, default=50, help="the newest N letters (default 50)")
    listing.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one letter: its reason, detail, source record and headers")
    show.add_argument("letter", type=_letter_address, help="PARTITION:OFFSET of the letter (from zsad dlq list)")
    show.add_argument("--out", metavar="FILE", help="also write the original image bytes to FILE")
    show.add_argument("--json", action="store_true", help="print the letter as JSON")
    show.set_defaults(func=cmd_show)

    resend = actions.add_parser("resend", help="send letters' original records to the frames topic again")
    resend.add_argument("letters", nargs="*", type=_letter_address, metavar="LETTER",
                        help="PARTITION:OFFSET of each letter; or select with --camera/--cause")  # fmt: skip
    resend.add_argument("--camera", help="every letter of this camera (with named letters: only those of it)")
    resend.add_argument("--cause", help="every letter refused for this reason code")
    resend.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    resend.add_argument("--reason", default="", help="why they are sent again (audited)")
    add_actor_option(resend)
    resend.set_defaults(func=cmd_resend)

    for parser in (listing, show, resend):
        add_config_option(parser)


def _letter_address(text: str) -> tuple[int, int]:
    from services.frame_path.dead_letters import parse_address

    try:
        return parse_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_list(args: argparse.Namespace) -> int:
    """Print the newest ``--limit`` letters that match."""
    from services.frame_path.dead_letters import read_letters

    config = config_from_args(args)
    letters = read_letters(config.kafka, camera=args.camera, reason=args.cause)
    letters = sorted(letters, key=lambda letter: letter.timestamp_ms)[-args.limit :]
    if args.json:
        print(json.dumps([letter.summary() for letter in letters], indent=2))
        return 0
    if not letters:
        print(f"no dead letters in {config.kafka.dlq_topic}" + _filters(args))
        return 0
    rows = [(letter.address, _time(letter), letter.camera, letter.frame_id, letter.reason, letter.source,
             _size(letter)) for letter in letters]  # fmt: skip
    widths = [max(len(row[i]) for row in [COLUMNS, *rows]) for i in range(len(COLUMNS))]
    for row in [COLUMNS, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print one letter; with ``--out``, write its original bytes."""
    from services.frame_path.dead_letters import fetch_letters

    config = config_from_args(args)
    (letter,) = fetch_letters(config.kafka, [args.letter])
    if args.out and letter.value:
        Path(args.out).write_bytes(letter.value)
    if args.json:
        headers = {name: raw.decode("utf-8", "replace") for name, raw in letter.headers}
        print(json.dumps({**letter.summary(), "headers": headers}, indent=2))
        return 0
    for name, value in letter.summary().items():
        print(f"{name:>14}: {_time(letter) if name == 'time' else value}")
    print(f"{'headers':>14}:")
    for name, raw in letter.headers:
        print(f"{'':>16}{name} = {raw.decode('utf-8', 'replace')}")
    if args.out:
        print(f"{'image':>14}: {args.out}" if letter.value else f"{'image':>14}: none kept, {args.out} not written")
    return 0


def cmd_resend(args: argparse.Namespace) -> int:
    """Send the chosen letters' records again and audit each; an error when nothing is chosen."""
    from services.frame_path.dead_letters import LetterError, fetch_letters, read_letters, resend
    from services.stores.result_store import connect

    if not args.letters and args.camera is None and args.cause is None:
        raise LetterError("name the letters to resend (PARTITION:OFFSET) or select them with --camera/--cause")
    config = config_from_args(args)
    if args.letters:
        letters = [letter for letter in fetch_letters(config.kafka, args.letters) if _matches(letter, args)]
    else:
        letters = read_letters(config.kafka, camera=args.camera, reason=args.cause)
    if not letters:
        print("no dead letters match" + _filters(args))
        return 0
    if args.dry_run:
        for letter in letters:
            print(f"would resend {letter.address}: {letter.camera} frame {letter.frame_id} ({letter.reason})")
        return 0
    sent = resend(config, letters)
    client = connect(config.redis)
    for item in sent:
        _audit(client, config.registry.namespace, item, config.kafka.frames_topic, args)
        print(f"resent {item.letter.address}: {item.letter.camera} frame {item.letter.frame_id} -> "
              f"{config.kafka.frames_topic}:{item.partition}:{item.offset}")  # fmt: skip
    return 0


def _audit(client: object, namespace: str, item: Resent, frames_topic: str, args: argparse.Namespace) -> None:
    """One audit entry per re-sent letter: which letter, where its record went, who and why."""
    from services.audit_log import append_audit
    from services.stores.artifact_registry import AuditEntry

    letter = item.letter
    entry = AuditEntry(action="dlq_resend", method=letter.camera, alias=f"{letter.camera}:frames",
                       from_version=f"dlq {letter.address} ({letter.source})",
                       to_version=f"{frames_topic}:{item.partition}:{item.offset}", outcome="resent",
                       actor=args.actor, reason=args.reason, cause=letter.reason,
                       detail=f"frame {letter.frame_id}")  # fmt: skip
    append_audit(client, namespace, entry.audit_fields())


def _matches(letter: Letter, args: argparse.Namespace) -> bool:
    return (args.camera is None or letter.camera == args.camera) and (args.cause is None or letter.reason == args.cause)


def _filters(args: argparse.Namespace) -> str:
    chosen = [f"{name} {value}" for name, value in (("camera", args.camera), ("cause", args.cause)) if value]
    return f" ({', '.join(chosen)})" if chosen else ""


def _size(letter: Letter) -> str:
    return f"{len(letter.value or b'')}{' (dropped)' if letter.value_dropped else ''}"


def _time(letter: Letter) -> str:
    return datetime.fromtimestamp(letter.timestamp_ms / 1000.0).astimezone().isoformat(timespec="seconds")
