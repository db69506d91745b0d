"""``zsad results``, ``zsad show`` and ``zsad mark``: what the stream found for a camera, and the operator's verdict.

Why in the CLI: an operator checking a camera wants its latest or worst frames and one overlay without a
dashboard, and to mark frames good or bad without the web view. ``results`` and ``show`` only read: the keys
written by serving (:mod:`services.stores.result_store`) and, for the pixels that Redis does not keep, the
frame's own record in Kafka (:mod:`services.stores.frame_readback`).

Heavy modules (redis, kafka, OpenCV) are imported inside the handlers so that ``zsad --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from services.cli.options import add_config_option, config_from_args
from zsad_core.errors import ZsadError

if TYPE_CHECKING:
    import numpy as np

    from services.config import CameraConfig, ZsadConfig
    from services.stores.result_store import ResultStore, StoredResult

DEFAULT_RECENT = 20
COLUMNS = ("FRAME", "SCORE", "DECISION", "THRESHOLD", "METHOD", "PROMPT", "REFERENCES", "CALIBRATION", "REGIONS",
           "PART", "CAPTURED (UTC)", "LATENCY_MS", "KAFKA")  # fmt: skip


class ResultNotFoundError(ZsadError, LookupError):
    """No stored result (or no map) for the requested frame: never scored, or expired after its TTL."""

    reason = "no_result"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad results`` and ``zsad show``."""
    results = commands.add_parser("results", help="a camera's latest or worst-scored frames, from Redis")
    results.add_argument("--camera", required=True, help="camera id (as in the config)")
    which = results.add_mutually_exclusive_group()
    which.add_argument("--worst", type=_positive_int, metavar="N", help="the N highest scores still stored")
    which.add_argument(
        "--recent",
        type=_positive_int,
        metavar="N",
        help=f"the N latest frames, newest first (default {DEFAULT_RECENT})",
    )
    results.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    add_config_option(results)
    results.set_defaults(func=cmd_results)

    show = commands.add_parser("show", help="render a frame's stored anomaly map over the frame (read from Kafka)")
    show.add_argument("--camera", required=True, help="camera id (as in the config)")
    show.add_argument("--frame", required=True, help="frame id")
    show.add_argument("--out", required=True, type=_png_path, help="output PNG file")
    add_config_option(show)
    show.set_defaults(func=cmd_show)

    mark = commands.add_parser("mark", help="mark a scored frame good or bad, as the web view does (calibrate "
                                            "--from-stream and reference add --from-marked learn from the marks)")
    mark.add_argument("--camera", required=True, help="camera id (as in the config)")
    mark.add_argument("--frame", required=True, help="frame id of a stored result")
    mark.add_argument("label", choices=["good", "bad"], help="what the operator saw")
    add_config_option(mark)
    mark.set_defaults(func=cmd_mark)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _png_path(text: str) -> str:
    if not text.lower().endswith(".png"):
        raise argparse.ArgumentTypeError(f"overlays are written as PNG; {text!r} does not end in .png")
    return text


def cmd_results(args: argparse.Namespace) -> int:
    """Print the camera's worst or latest results as a table or JSON."""
    config = config_from_args(args)
    config.camera(args.camera)  # an unknown id: UnknownCameraError listing the configured ones
    with open_store(config) as store:
        rows = fetch_results(store, args.camera, worst=args.worst, recent=args.recent or DEFAULT_RECENT)
    random = sum(row.weights == "random" for row in rows)
    if random:  # first, on stderr: these decisions are noise, whatever the table says
        print(f"zsad: warning: {random} of these {len(rows)} frames were scored with RANDOM CLIP weights "
              "(serving.pretrained: false): their scores and decisions are noise", file=sys.stderr)
    if args.json:
        print(json.dumps([result_record(row) for row in rows], indent=2))
    if not rows:
        # With --json the empty list above is the answer for scripts; the note goes to stderr.
        print(f"no results for camera {args.camera}", file=sys.stderr if args.json else sys.stdout)
    elif not args.json:
        print(format_table(rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Write the stored map over its frame; the map alone, with a warning, when the frame cannot be had."""
    import numpy as np

    from services.stores.frame_readback import FrameUnavailableError
    from zsad_core.visualize import save_overlay

    config = config_from_args(args)
    camera = config.camera(args.camera)
    with open_store(config) as store:
        result = store.get_result(args.camera, args.frame)
        anomaly_map = store.get_map(args.camera, args.frame) if result is not None else None
    if result is None:
        raise ResultNotFoundError(
            f"no result for frame {args.frame!r} of camera {args.camera!r} in Redis "
            "(never scored, or expired after its TTL)"
        )
    if anomaly_map is None:
        raise ResultNotFoundError(
            f"frame {args.frame!r} of camera {args.camera!r} has no stored anomaly map "
            f"(method {result.method} gives none, or it expired)"
        )
    try:
        frame = load_frame(config, camera, result)
    except FrameUnavailableError as exc:
        print(f"zsad: warning: {exc}; writing the anomaly map alone", file=sys.stderr)
        heat = np.zeros((*anomaly_map.shape, 3), np.uint8)
        path = save_overlay(args.out, heat, anomaly_map, threshold=result.threshold, alpha=1.0)
        print(f"heat map of frame {args.frame} written to {path}")
        _print_part(result)
        return 0
    path = save_overlay(args.out, frame, anomaly_map, threshold=result.threshold)
    print(f"overlay of frame {args.frame} written to {path}")
    _print_part(result)
    return 0


def _print_part(result: StoredResult) -> None:
    """The part the shown frame names, so an operator can find it on the line."""
    named = {"serial": result.part_serial, "id": result.part_id, "station": result.part_station}
    if any(named.values()):
        print("part " + ", ".join(f"{name} {value}" for name, value in named.items() if value))


def cmd_mark(args: argparse.Namespace) -> int:
    """Record the operator's mark; a frame without a stored result is refused (MarkError, exit 2)."""
    from services.stores.operator_marks import mark_frame
    from services.stores.result_store import connect

    config = config_from_args(args)
    config.camera(args.camera)
    with connect(config.redis) as client:
        mark_frame(client, args.camera, args.frame, args.label)
    print(f"frame {args.frame} of {args.camera} marked {args.label}")
    return 0


@contextmanager
def open_store(config: ZsadConfig) -> Iterator[ResultStore]:
    """A result store for the command's duration (Redis failures are reported by ``main``, with the address)."""
    from services.stores.result_store import ResultStore

    store = ResultStore.from_config(config)
    try:
        yield store
    finally:
        store.close()


def fetch_results(store: ResultStore, camera: str, *, worst: int | None, recent: int) -> list[StoredResult]:
    """The ``worst`` highest-scoring results, highest first, or else the ``recent`` latest, newest first."""
    if worst is None:
        return store.recent(camera, recent)
    found = [store.get_result(camera, frame_id) for frame_id, _ in store.worst(camera, worst)]
    return [result for result in found if result is not None]  # one may expire between the two reads


def result_record(result: StoredResult) -> dict[str, Any]:
    """A result as a JSON-ready dict: its stored fields plus ISO capture time and end-to-end latency."""
    return {**asdict(result), "capture_time": _iso(result.capture_ts), "latency_ms": _latency_ms(result)}


def format_table(results: Sequence[StoredResult]) -> str:
    """Results as an aligned text table, one line per frame under a header line."""
    rows = [COLUMNS]
    for result in results:
        latency = _latency_ms(result)
        rows.append((
            result.frame_id,
            f"{result.score:.4f}",
            result.decision or ("reject" if result.label else "pass"),  # results stored before decisions existed
            f"{result.threshold:.4f}",
            result.method,
            result.prompt_version or "-",
            result.reference_version or "-",
            result.calibration_version or "-",
            "-" if result.regions is None else str(len(result.regions)),  # -: regions were not computed
            part_label(result),
            _iso(result.capture_ts) or "-",
            "-" if latency is None else f"{latency:.1f}",
            f"{result.partition}:{result.offset}" if result.partition >= 0 else "-",  # -1: not read from Kafka
        ))  # fmt: skip
    widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def part_label(result: StoredResult) -> str:
    """The part a result names, compactly: ``serial/id@station`` with the parts that are set; ``-`` for none."""
    label = "/".join(value for value in (result.part_serial, result.part_id) if value)
    if result.part_station:
        label += f"@{result.part_station}"
    return label or "-"


def _iso(timestamp: float) -> str | None:
    # 0 means "unknown" in the store (a frame that did not come with a capture time).
    if timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="milliseconds")


def _latency_ms(result: StoredResult) -> float | None:
    """Capture to Redis write, in ms: what a camera's frame waits before its result can be read."""
    if result.capture_ts <= 0:
        return None
    return round((result.write_ts - result.capture_ts) * 1000.0, 1)


def load_frame(config: ZsadConfig, camera: CameraConfig, result: StoredResult) -> np.ndarray:
    """The frame a result was computed on, as RGB uint8, cropped as it was for the model (the result's ROI).

    Raises:
        FrameUnavailableError: the record is gone, is another frame, cannot be decoded within the configured
            limits, or the camera's ROI does not fit in it.
    """
    from services.frame_path.decoding import crop_roi
    from services.stores.frame_readback import FrameUnavailableError, fetch_frame
    from zsad_core.imageio import decode_image

    data = fetch_frame(config.kafka, result.partition, result.offset, result.frame_id, camera=result.camera)
    try:
        # The crop the map covers, recorded with the result (results from before it was recorded: the
        # configured ROI, which a frame may no longer fit when the configuration changed since).
        return crop_roi(decode_image(data, config.limits.image_limits()), result.roi or camera.roi)
    except ZsadError as exc:
        raise FrameUnavailableError(f"frame {result.frame_id} cannot be shown: {exc}") from exc
