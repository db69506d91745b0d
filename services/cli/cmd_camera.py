"""``zsad calibrate``, ``zsad calibration list|show|rollback`` and ``zsad camera set|show|pause|resume``.

Live camera settings and calibration records live in Redis next to the prompt registry (same namespace, audit
stream and events channel, see :mod:`services.stores.camera_settings`), so these commands take the same
``--config`` and ``--actor`` as ``zsad registry`` and every change shows up in ``zsad registry audit``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from services.arg_types import finite_float, non_negative_int, open_fraction, positive_int
from services.cli.cmd_registry import _open
from services.cli.options import (
    DeprecatedSpellings,
    add_actor_option,
    add_config_option,
    config_from_args,
    resolve_device,
)

if TYPE_CHECKING:
    from services.decisions.calibration import CalibrationDecision
    from services.stores.camera_settings import CameraSettings, CameraSettingsStore
    from zsad_core.decisions import ThresholdChoice


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad calibrate``, ``zsad calibration ...`` and ``zsad camera ...``."""
    calibrate = commands.add_parser("calibrate", help="set a camera's thresholds from known-good (and bad) images")
    _camera_option(calibrate)
    goods = calibrate.add_mutually_exclusive_group(required=True)
    goods.add_argument("--good", metavar="DIR", help="folder of known-good frames")
    goods.add_argument("--from-stream", type=positive_int, metavar="N",
                       help="the newest N frames of the camera marked good (read back from Kafka)")  # fmt: skip
    calibrate.add_argument("--bad", metavar="DIR", help="folder of known-bad frames: F1-max thresholds")
    calibrate.add_argument("--bad-masks", metavar="DIR",
                           help="masks of the bad frames (<stem>.png, non-zero = defect): pixel F1-max")  # fmt: skip
    calibrate.add_argument("--false-reject", type=open_fraction, default=0.01, metavar="RATE",
                           help="target false-reject rate on goods (default 0.01)")  # fmt: skip
    calibrate.add_argument("--confidence", type=open_fraction, default=0.95, help="level of the reported bounds")
    calibrate.add_argument("--device", default="auto",
                           help="torch device of the model: auto (cuda when available, else cpu), cpu, cuda, ...")
    calibrate.add_argument("--dry-run", action="store_true", help="print the decision, store nothing")
    calibrate.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(calibrate)
    calibrate.set_defaults(func=cmd_calibrate)

    calibration = commands.add_parser("calibration", help="a camera's calibration records: list, show, rollback")
    actions = calibration.add_subparsers(dest="calibration_command", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="every calibration of the camera, the current one marked")
    show = actions.add_parser("show", help="one calibration record as JSON (default: the current one)")
    show.add_argument("version", metavar="VERSION", nargs="?", default=argparse.SUPPRESS,
                      help="a calibration version (c1, c2, ...); default: the current one")
    show.add_argument("--version", dest="version", action=DeprecatedSpellings, deprecated=("--version",),
                      replacement="the VERSION argument", default=argparse.SUPPRESS, help="a calibration version")
    rollback = actions.add_parser("rollback", help="make the previous calibration current again")
    rollback.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(rollback)
    listing.set_defaults(func=cmd_calibration_list)
    show.set_defaults(func=cmd_calibration_show)
    rollback.set_defaults(func=cmd_calibration_rollback)

    camera = commands.add_parser("camera", help="a camera's live settings: show, set, pause, resume")
    verbs = camera.add_subparsers(dest="camera_command", metavar="ACTION", required=True)
    show_settings = verbs.add_parser("show", help="the current settings as JSON, each value's source (yaml, live, "
                                                  "calibration) under sources")
    show_settings.add_argument("--history", action="store_true", help="every stored version, oldest first")
    show_settings.set_defaults(func=cmd_camera_show)
    change = verbs.add_parser("set", help="change settings at run time (a new audited version)",
                              argument_default=argparse.SUPPRESS)  # fmt: skip
    change.add_argument("--threshold", type=finite_float, help="image score from which a frame is anomalous")
    change.add_argument("--pixel-threshold", type=_number_or_none, metavar="VALUE|none",
                        help="map value from which a pixel is part of a region")  # fmt: skip
    change.add_argument("--min-area", type=non_negative_int, help="smallest region kept, in frame pixels")
    change.add_argument("--roi", type=_roi, metavar="X,Y,W,H|none", help="inspected part of the frame")
    change.add_argument("--prompt-version", type=_text_or_none, metavar="VERSION|ALIAS|none",
                        help="prompt version or alias to follow (none: zero-shot prompts)")  # fmt: skip
    change.set_defaults(func=cmd_camera_set)
    pause = verbs.add_parser("pause", help="stop inspecting the camera's frames")
    pause.set_defaults(func=cmd_camera_set, paused=True)
    resume = verbs.add_parser("resume", help="inspect the camera's frames again")
    resume.set_defaults(func=cmd_camera_set, paused=False)
    for parser in (change, pause, resume):
        parser.add_argument("--reason", default="", help="why (audited)")
        add_actor_option(parser)
    for parser in (listing, show, rollback, show_settings, change, pause, resume):
        _camera_option(parser)
    for parser in (calibrate, listing, show, rollback, show_settings, change, pause, resume):
        add_config_option(parser)


def _camera_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--camera", required=True, help="a configured camera id")


def _number_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


def _text_or_none(text: str) -> str | None:
    return None if text.lower() == "none" else text


def _roi(text: str) -> list[int] | None:
    if text.lower() == "none":
        return None
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"roi must be X,Y,W,H integers or none, got {text!r}") from None


@contextmanager
def _store(args: argparse.Namespace) -> Iterator[CameraSettingsStore]:
    from services.stores.camera_settings import CameraSettingsStore

    config = config_from_args(args)
    with _open(args) as registry:
        yield CameraSettingsStore(registry, config)


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Score the images, print the decision and why, and store it (unless ``--dry-run``)."""
    from services.decisions.calibration import calibrate_camera

    with _store(args) as store:
        decision = calibrate_camera(
            store,
            args.camera,
            good=args.good if args.good is not None else args.from_stream,
            bad=args.bad,
            bad_masks=args.bad_masks,
            false_reject=args.false_reject,
            confidence=args.confidence,
            device=resolve_device(args.device),
        )
        _print_decision(args.camera, decision)
        if args.dry_run:
            print("dry run: nothing stored")
            return 0
        record, settings = store.record_calibration(
            args.camera,
            image_threshold=decision.image.threshold,
            pixel_threshold=decision.pixel.threshold,
            evidence=decision.evidence,
            actor=args.actor,
            reason=args.reason,
        )
    print(f"stored calibration {record.version}; {args.camera} now runs settings {settings.version}")
    return 0


def _print_decision(camera: str, decision: CalibrationDecision) -> None:
    evidence = decision.evidence
    goods = evidence["good_scores"]
    print(
        f"{camera}: {evidence['method']} ({evidence['class_name']})"
        f", prompts {evidence['prompt_version'] or 'zero-shot'}"
        f", input {evidence['image_size']} px, frames {evidence['frame_size'][0]}x{evidence['frame_size'][1]}"
        f", roi {evidence['roi'] or 'whole frame'}"
    )
    print(f"  {goods['n']} good frames from {evidence['sources']['good']}: {_spread(goods)}")
    if "bad_scores" in evidence:
        print(f"  {evidence['bad_scores']['n']} bad frames from {evidence['sources']['bad']}: "
              f"{_spread(evidence['bad_scores'])}")  # fmt: skip
    print(f"  image threshold {decision.image.threshold:.6g}: {_why(decision.image, 'frames')}")
    if decision.image.rule == "false_reject" and decision.image.false_reject_bound > decision.image.target_false_reject:
        print(f"  ({evidence['goods_needed_for_target']} goods would bound the false-reject rate by the target "
              f"at {decision.image.confidence:.0%} confidence)")  # fmt: skip
    pixel_what = "pixels" if evidence["pixel_rule"] == "pixel_f1_max" else "frames (their highest map value)"
    print(f"  pixel threshold {decision.pixel.threshold:.6g}: {_why(decision.pixel, pixel_what)}")


def _spread(stats: dict[str, float]) -> str:
    return ", ".join(f"{name} {stats[name]:.4g}" for name in ("min", "p50", "p90", "p99", "max"))


def _why(choice: ThresholdChoice, what: str) -> str:
    bound = f"below {choice.false_reject_bound:.2%} with {choice.confidence:.0%} confidence"
    if choice.rule == "false_reject":
        return (
            f"target {choice.target_false_reject:.2%} false-reject over {choice.n_good} good {what}: expected "
            f"{choice.expected_false_reject:.2%}, {bound}; {choice.set_false_reject:.2%} of the calibration set"
        )
    return (
        f"F1-max {choice.f1:.3f} over {choice.n_good} good and {choice.n_bad} bad {what}: misses "
        f"{choice.set_miss_rate:.2%} of the bad ones, rejects {choice.set_false_reject:.2%} of the good ones ({bound})"
    )


def cmd_calibration_list(args: argparse.Namespace) -> int:
    """One line per calibration: version, current marker, thresholds, goods/bads, when and by whom."""
    with _store(args) as store:
        records = store.calibrations(args.camera)
        history = store.calibration_history(args.camera)
    if not records:
        print(f"{args.camera} has never been calibrated")
    current = history[-1] if history else None
    for record in records:
        image = record.evidence.get("image", {})
        marker = "current" if record.version == current else ("history" if record.version in history else "-")
        print(
            f"{record.version:<5} {marker:<8} image {record.image_threshold:<10.6g} pixel "
            f"{_or_dash(record.pixel_threshold):<10} {image.get('rule', '-'):<12} goods {image.get('n_good', '-')} "
            f"bads {image.get('n_bad', '-')}  {record.created_at} {record.created_by}"
            + (f": {record.reason}" if record.reason else "")
        )
    return 0


def cmd_calibration_show(args: argparse.Namespace) -> int:
    """The record as JSON."""
    with _store(args) as store:
        record = store.calibration(args.camera, getattr(args, "version", None))  # absent: the current one
    print(json.dumps(record.to_dict(), indent=2, sort_keys=True))
    return 0


def cmd_calibration_rollback(args: argparse.Namespace) -> int:
    """Pop the current calibration; its predecessor's thresholds become a new settings version."""
    with _store(args) as store:
        record, settings = store.rollback_calibration(args.camera, actor=args.actor, reason=args.reason)
    print(f"{args.camera}: calibration {record.version} is current again; settings {settings.version}: "
          f"threshold {settings.threshold:.6g}, pixel threshold {_or_dash(settings.pixel_threshold)}")  # fmt: skip
    return 0


def cmd_camera_show(args: argparse.Namespace) -> int:
    """The current settings with where each value came from (``sources``), or every version with ``--history``,
    as JSON."""
    with _store(args) as store:
        shown: Any = (
            [item.to_dict() for item in store.settings_history(args.camera)]
            if args.history
            else {**store.settings(args.camera).to_dict(), "sources": store.sources(args.camera)}
        )
    print(json.dumps(shown, indent=2, sort_keys=True))
    return 0


def cmd_camera_set(args: argparse.Namespace) -> int:
    """Store the given changes as a new settings version (``pause``/``resume`` set ``paused``).

    Options the user did not give are absent from ``args`` (``argparse.SUPPRESS``), so ``--roi none`` (clear it)
    differs from no ``--roi`` (keep it).
    """
    from services.stores.camera_settings import SETTABLE

    changes = {field: getattr(args, field) for field in SETTABLE if hasattr(args, field)}
    if not changes:
        print("nothing to change: give --threshold, --pixel-threshold, --min-area, --roi or --prompt-version")
        return 2
    with _store(args) as store:
        settings = store.update(args.camera, changes, actor=args.actor, reason=args.reason)
    _print_settings(settings)
    return 0


def _print_settings(settings: CameraSettings) -> None:
    print(
        f"{settings.camera}: settings {settings.version}: threshold {settings.threshold:.6g}, pixel threshold "
        f"{_or_dash(settings.pixel_threshold)}, min area {settings.min_area}, roi {list(settings.roi or []) or '-'}"
        f", prompts {settings.prompt_version or 'zero-shot'}, {'paused' if settings.paused else 'running'}"
    )


def _or_dash(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"
