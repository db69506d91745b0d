"""``zsad gateway folder|stream|gige``: bring a camera's frames into Kafka (see :mod:`services.gateway`).

Why standalone processes: a gateway runs next to the line, on the camera PC, where only Kafka has to be
reachable; one process per camera source keeps a failing camera from stalling the others.
"""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import add_config_option, config_from_args

if TYPE_CHECKING:
    from services.config import ZsadConfig
    from services.gateway.encoding import FrameEncoding
    from services.gateway.metrics import GatewayMetrics
    from services.gateway.runner import Source

    SourceFactory = Callable[[ZsadConfig, GatewayMetrics, FrameEncoding], Source]

GiB = 1024**3
GATEWAY_DIR = Path("runs/gateway")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad gateway ...``."""
    gateway = commands.add_parser("gateway", help="send a camera's frames to Kafka: hot folder, stream, GigE camera")
    kinds = gateway.add_subparsers(dest="gateway_kind", metavar="SOURCE", required=True)
    folder = kinds.add_parser("folder", help="image files written into a folder, moved to done/ once acknowledged")
    folder.add_argument("--path", required=True, type=Path, help="the watched folder")
    folder.add_argument("--done", type=Path, help="acknowledged files go here (default: PATH/done)")
    folder.add_argument("--delete", action="store_true", help="delete acknowledged files instead of moving them")
    folder.add_argument("--failed", type=Path,
                        help="invalid files and their .error.json go here (default: PATH/failed)")  # fmt: skip
    folder.add_argument("--pattern", default="*", metavar="GLOB", help="names that are frames (default: all)")
    folder.add_argument("--settle-s", type=float, default=1.0,
                        help="seconds a file's size and time must stay unchanged before it is read (default 1; "
                             "0 for writers that write under a temporary name and rename)")  # fmt: skip
    folder.add_argument("--rescan-s", type=float, default=0.5, help="seconds between scans (default 0.5)")
    folder.set_defaults(func=cmd_gateway_folder)
    for parser in (folder,):
        _common_options(parser)


def _common_options(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--camera", required=True, help="camera id (the record key)")
    parser.add_argument("--spool", type=Path, help=f"disk spool folder (default: {GATEWAY_DIR}/CAMERA/spool)")
    parser.add_argument("--spool-max-bytes", type=int, default=GiB,
                        help="spool size limit; frames beyond it are refused (default 1 GiB)")  # fmt: skip
    parser.add_argument("--encode", choices=["keep", "jpeg", "png"], default="keep",
                        help="keep a file's bytes (default), or re-encode as JPEG or PNG")  # fmt: skip
    parser.add_argument("--jpeg-quality", type=int, default=90, help="JPEG quality 1-100 (default 90)")
    parser.add_argument("--max-side", type=int, help="downscale frames with a longer side to this many pixels")
    parser.add_argument("--part-pattern", metavar="REGEX",
                        help="part identity in file names: named groups part_id, serial, station")  # fmt: skip
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="address the metrics are served on (default 127.0.0.1; 0.0.0.0 for a remote Prometheus)")


def cmd_gateway_folder(args: argparse.Namespace) -> int:
    """Watch a folder until SIGTERM."""
    from services.config import ConfigError
    from services.gateway.folder_source import FolderSettings, FolderSource
    from services.gateway.part_identity import compile_part_pattern

    if not args.path.is_dir():
        raise ConfigError(f"gateway folder of camera {args.camera}: {args.path} is not a folder")

    settings = FolderSettings(
        path=args.path,
        done=None if args.delete else (args.done or args.path / "done"),
        failed=args.failed or args.path / "failed",
        pattern=args.pattern,
        settle_s=args.settle_s,
        rescan_s=args.rescan_s,
        part_pattern=compile_part_pattern(args.part_pattern) if args.part_pattern else None,
    )
    return _run(args, lambda config, metrics, encoding: FolderSource(
        args.camera, settings, encoding=encoding, limits=config.limits, metrics=metrics))  # fmt: skip


def _run(args: argparse.Namespace, make_source: SourceFactory) -> int:
    """Build the spool, the sender and the source, and run them until SIGTERM."""
    from services.gateway.encoding import FrameEncoding
    from services.gateway.metrics import GatewayMetrics, serve_metrics
    from services.gateway.runner import run_gateway, stop_on_signals
    from services.gateway.sender import FrameSender
    from services.gateway.spool import DiskSpool

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = config_from_args(args)
    metrics = GatewayMetrics(args.camera)
    if args.metrics_port is not None:
        serve_metrics(metrics, args.metrics_port, args.metrics_host)
    encoding = FrameEncoding(format=args.encode, jpeg_quality=args.jpeg_quality, max_side=args.max_side)
    spool = DiskSpool(args.spool or GATEWAY_DIR / args.camera / "spool", args.spool_max_bytes)
    source = make_source(config, metrics, encoding)
    sender = FrameSender(config.kafka, spool, metrics, max_frame_bytes=config.limits.max_bytes)
    stop = threading.Event()
    stop_on_signals(stop)
    run_gateway(source, sender, stop)
    return 0
