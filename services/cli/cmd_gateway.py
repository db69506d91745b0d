"""``zsad gateway folder|stream|gige|run``: bring a camera's frames into Kafka (see :mod:`services.gateway`).

Why standalone processes: a gateway runs next to the line, on the camera PC, where only Kafka has to be
reachable; one process per camera source keeps a failing camera from stalling the others. The source
sub-commands take the fields of a ``gateways:`` entry (:class:`services.config.GatewayConfig`) as options;
``zsad gateway run --camera CAM`` takes them from the config file instead.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import TYPE_CHECKING, Any

from services.arg_types import jpeg_quality, non_negative_float, port_number, positive_float, positive_int
from services.cli.options import add_config_option, config_from_args

if TYPE_CHECKING:
    from services.config import GatewayConfig, ZsadConfig

GiB = 1024**3


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad gateway ...``."""
    gateway = commands.add_parser("gateway", help="send a camera's frames to Kafka: hot folder, stream, GigE camera")
    kinds = gateway.add_subparsers(dest="gateway_kind", metavar="SOURCE", required=True)
    run = kinds.add_parser("run", help="the camera's entry of the config's gateways: section")
    add_config_option(run)
    run.add_argument("--camera", required=True, help="camera id (a key of gateways:)")
    run.set_defaults(func=cmd_gateway_run)

    folder = kinds.add_parser("folder", help="image files written into a folder, moved to done/ once acknowledged",
                              argument_default=argparse.SUPPRESS)  # fmt: skip
    folder.add_argument("--path", required=True, help="the watched folder")
    folder.add_argument("--done", help="acknowledged files go here (default: PATH/done)")
    folder.add_argument("--delete", dest="delete_sent", action="store_true",
                        help="delete acknowledged files instead of moving them")  # fmt: skip
    folder.add_argument("--failed", help="invalid files and their .error.json go here (default: PATH/failed)")
    folder.add_argument("--pattern", metavar="GLOB", help="names that are frames (default: all)")
    folder.add_argument("--settle-s", type=non_negative_float,
                        help="seconds a file's size and time must stay unchanged before it is read (default 1; "
                             "0 for writers that write under a temporary name and rename)")  # fmt: skip
    folder.add_argument("--rescan-s", type=positive_float, help="seconds between scans (default 0.5)")
    folder.add_argument("--part-pattern", metavar="REGEX",
                        help="part identity in file names: named groups part_id, serial, station")  # fmt: skip
    folder.set_defaults(func=cmd_gateway_source, kind="folder")

    stream = kinds.add_parser("stream", help="an RTSP or HTTP MJPEG stream, or a video file, sampled at --fps",
                              argument_default=argparse.SUPPRESS)  # fmt: skip
    stream.add_argument("--url", required=True, help="rtsp://..., http(s)://... (MJPEG) or a video file")
    stream.add_argument("--fps", type=positive_float, help="frames per second to keep (default: every frame)")
    stream.set_defaults(func=cmd_gateway_source, kind="stream")

    gige = kinds.add_parser("gige", help="a GigE Vision camera through Aravis", argument_default=argparse.SUPPRESS)
    gige.add_argument("--device", required=True, help="Aravis device id, serial number or IP address")
    gige.add_argument("--trigger", choices=["free", "software", "hardware"],
                      help="free running (default), software trigger at --fps, or hardware trigger on Line1")
    gige.add_argument("--fps", type=positive_float, help="frame rate (free) or software triggers per second")
    gige.add_argument("--exposure-us", type=positive_float,
                      help="exposure time in microseconds (default: the camera's)")
    gige.add_argument("--count", type=positive_int, help="stop after this many frames (default: run until stopped)")
    gige.set_defaults(func=cmd_gateway_source, kind="gige")
    for parser in (folder, stream, gige):
        _common_options(parser)


def _common_options(parser: argparse.ArgumentParser) -> None:
    """Options of every source; absent ones keep :class:`~services.config.GatewayConfig`'s defaults."""
    add_config_option(parser)
    parser.add_argument("--camera", required=True, help="camera id (the record key)")
    parser.add_argument("--spool", dest="spool_dir",
                        help="disk spool folder (default: gateway/CAMERA/spool in the state home)")
    parser.add_argument("--spool-max-bytes", type=positive_int,
                        help="spool limit; beyond it new frames are refused (1 GiB)")
    parser.add_argument("--encode", choices=["keep", "jpeg", "png"],
                        help="keep a file's bytes (default; streams become JPEG), or re-encode as JPEG or PNG")
    parser.add_argument("--jpeg-quality", type=jpeg_quality, help="JPEG quality 1-100 (default 90)")
    parser.add_argument("--max-side", type=positive_int, help="downscale frames with a longer side to this many pixels")
    parser.add_argument("--metrics-port", type=port_number, help="serve Prometheus metrics on this port")
    parser.add_argument("--metrics-host", help="address of the metrics (default 127.0.0.1; 0.0.0.0 for remote)")


def cmd_gateway_source(args: argparse.Namespace) -> int:
    """Run a gateway described by the command line until SIGTERM."""
    from pydantic import ValidationError

    from services.config import ConfigError, GatewayConfig

    fields: dict[str, Any] = {name: value for name, value in vars(args).items() if name in GatewayConfig.model_fields}
    try:
        entry = GatewayConfig(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"--{str(error['loc'][0]).replace('_', '-')}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
        raise ConfigError(f"zsad gateway {args.kind}: {problems}") from None
    return _serve(config_from_args(args), args.camera, entry)


def cmd_gateway_run(args: argparse.Namespace) -> int:
    """Run the configured gateway of a camera until SIGTERM."""
    from services.config import ConfigError

    config = config_from_args(args)
    if args.camera not in config.gateways:
        known = ", ".join(sorted(config.gateways)) or "none"
        raise ConfigError(f"camera {args.camera!r} has no entry under gateways: (configured: {known})")
    return _serve(config, args.camera, config.gateways[args.camera])


def _serve(config: ZsadConfig, camera: str, entry: GatewayConfig) -> int:
    from services.gateway.heartbeat import GatewayHeartbeat
    from services.gateway.runner import build_gateway, run_gateway, stop_on_signals

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source, sender = build_gateway(config, camera, entry)
    heartbeat = GatewayHeartbeat.from_config(config.redis, camera, entry.kind, sender.metrics)
    stop = threading.Event()
    stop_on_signals(stop)
    run_gateway(source, sender, stop, heartbeat)
    return 0
