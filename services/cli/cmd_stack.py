"""``zsad up``, ``zsad down``, ``zsad status`` and ``zsad produce``: run and feed the local stack."""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

from services.arg_types import non_negative_float, non_negative_int, positive_int
from services.cli.options import add_address_option, add_config_option, config_from_args
from services.cli.summaries import format_stack_state
from services.state_home import stack_dir

STATUS_TOP = 20  # cameras needing attention listed by `zsad status` without --all
SERVING_RANDOM_WEIGHTS = ("RANDOM CLIP WEIGHTS (serving.pretrained: false, no serving.backbone_weights): "
                          "the scores and decisions below are noise")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``up``, ``down``, ``status`` and ``produce``."""
    up = commands.add_parser("up", help="start the local stack (Redis, broker, Ray + dashboard, the Serve app)")
    add_config_option(up)
    up.add_argument("--external", action="store_true",
                    help="use the config's Kafka and Redis instead of starting local ones (only Ray + the app)")
    up.add_argument("--foreground", action="store_true", help="run in this terminal until Ctrl-C")
    up.add_argument("--rotate-redis-password", action="store_true",
                    help="replace the local Redis password kept across restarts (clients need the new config)")
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="stop the local stack started by `zsad up`")
    down.set_defaults(func=cmd_down)

    status = commands.add_parser("status", help="cameras by state and those needing attention, gateways, ingest "
                                                "actors and the dashboard URL")  # fmt: skip
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="print JSON (every camera)")
    status.add_argument("--all", action="store_true", help="a row for every camera, not only those needing attention")
    status.add_argument("--top", type=positive_int, default=STATUS_TOP,
                        help=f"rows of cameras needing attention, most urgent first (default {STATUS_TOP})")
    add_address_option(status, "Ray cluster whose Serve app to ask for the ingest status (default: the local "
                               "stack's, through its web view)")  # fmt: skip
    status.set_defaults(func=cmd_status)

    ingest = commands.add_parser("ingest", help="the ingest actors of the running app: scale")
    ingest_actions = ingest.add_subparsers(dest="ingest_command", metavar="ACTION", required=True)
    scale = ingest_actions.add_parser(
        "scale", help="set the number of ingest actors; partitions are reassigned after the actors drain"
    )
    scale.add_argument("num_actors", type=positive_int, metavar="N", help="ingest actors wanted")
    add_address_option(scale, "Ray cluster of the Serve app (default: the local stack's)")
    scale.set_defaults(func=cmd_ingest_scale)

    serve_config = commands.add_parser(
        "serve-config", help="print the Serve config (serveConfigV2) that runs the app with a config file"
    )
    add_config_option(serve_config)
    serve_config.add_argument("--config-path", default="/etc/zsad/config.yaml",
                              help="where the config file will be on the cluster's nodes")
    serve_config.set_defaults(func=cmd_serve_config)

    produce = commands.add_parser("produce", help="send frames of one camera to the frames topic")
    add_config_option(produce)
    produce.add_argument("--camera", required=True, help="camera id (as in the config)")
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of JPEG/PNG files")
    source.add_argument("--synthetic", action="store_true", help="procedural products with synthetic defects")
    produce.add_argument("--fps", type=non_negative_float, default=0.0,
                         help="frames per second (0: as fast as possible)")
    produce.add_argument("--count", type=positive_int,
                         help="frames to send (default: a folder once, synthetic forever)")
    produce.add_argument("--size", type=positive_int, default=256, help="side of synthetic frames")
    produce.add_argument("--seed", type=non_negative_int, default=0, help="seed of the synthetic frames")
    produce.set_defaults(func=cmd_produce)


def cmd_up(args: argparse.Namespace) -> int:
    """Start the stack in the background (or the foreground) and print where everything is."""
    from services.local_stack.control import running_stack, start_stack
    from services.local_stack.stack_process import LOG_NAME, run_stack

    config = Path(args.config) if args.config else None
    if args.foreground:
        return run_stack(config, stack_dir(), external=args.external, rotate_redis_password=args.rotate_redis_password)
    state = running_stack(stack_dir())
    if state is not None and state.status in ("ready", "starting"):
        print(f"the local stack is already running (pid {state.pid})")
    else:
        print(f"starting the local stack (log {stack_dir() / LOG_NAME}) ...", flush=True)
    state = start_stack(config, args.external, stack_dir=stack_dir(), rotate_redis_password=args.rotate_redis_password)
    print(format_stack_state(state))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the stack and everything it started."""
    from services.local_stack.control import running_stack, stop_stack

    if running_stack(stack_dir()) is not None:
        print("stopping the local stack ...", flush=True)
    stopped = stop_stack(stack_dir())
    if stopped is None:
        print("no local stack is running")
        return 0
    for name in stopped.orphans:
        print(f"stopped orphaned {name}")
    print("stopped")
    return 0


def ingest_status(serve_url: str, token: str, timeout_s: float = 10.0) -> dict:
    """The ingest controller's status from the web view's ``api/ingest`` route, with a viewer token."""
    url = serve_url.rstrip("/") + "/api/ingest"
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - our loopback URL
        return json.loads(response.read())


def cmd_status(args: argparse.Namespace) -> int:
    """A summary of all cameras and those needing attention, from Redis; ingest actors from the running app."""
    from services.cli.summaries import camera_summaries, format_ingest_actor, format_summary
    from services.gateway.heartbeat import format_gateway_status, read_gateway_statuses
    from services.local_stack.control import running_stack
    from services.read_models import OverviewSummary, read_camera_rows
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.camera_settings import CameraSettingsStore
    from services.stores.result_store import ResultStore

    config = config_from_args(args)
    store = ResultStore.from_config(config)
    gateways = read_gateway_statuses(store.client, config.gateways)
    settings = CameraSettingsStore(ArtifactRegistry.from_config(config.registry, store.client), config)
    overview = read_camera_rows(store.client, settings, config, {g.camera: g.state for g in gateways})
    states = {row.camera: str(row.state) for row in overview}
    rows = {row.camera: row for row in camera_summaries(store, list(config.cameras))}
    state = running_stack(stack_dir())
    ingest = None
    if args.address is not None:
        from services.cli.serve_calls import CALL_TIMEOUT_S, serve_deployment

        with serve_deployment("IngestController", args.address) as controller:
            ingest = controller.status.remote().result(timeout_s=CALL_TIMEOUT_S)
    elif state is not None and state.status == "ready":
        try:
            token = config.view.viewer_token or config.view.operator_token
            ingest = ingest_status(state.serve_url, token.get_secret_value() if token else "")
        except OSError as exc:
            ingest = {"error": str(exc)}
    summary = OverviewSummary.of(overview)
    if args.json:
        cameras = [{**rows[camera].__dict__, "state": states[camera]} for camera in config.cameras]
        print(json.dumps({"summary": summary.__dict__, "cameras": cameras, "ingest": ingest,
                          "gateways": [gateway.__dict__ for gateway in gateways],
                          "random_weights": config.serving.random_weights,
                          "dashboard": state.dashboard_url if state else None}, indent=2))  # fmt: skip
        return 0
    if config.serving.random_weights:
        print(f"serving {SERVING_RANDOM_WEIGHTS}")
    print(summary.line())
    shown = overview if args.all else [row for row in overview if row.state != "running"][: args.top]
    if shown:
        print(format_summary([rows[row.camera] for row in shown], states=states))
    hidden = len(overview) - len(shown)
    if hidden:
        print(f"... and {hidden} more camera{'' if hidden == 1 else 's'} (--all lists every camera)")
    for gateway in gateways:
        print(format_gateway_status(gateway))
    if state is not None:
        print(f"\ndashboard {state.dashboard_url}")
    for actor in (ingest or {}).get("actors", []):
        print(format_ingest_actor(actor))
    return 0


def cmd_ingest_scale(args: argparse.Namespace) -> int:
    """Ask the app's ingest controller for N actors and print the partitions each one reads now."""
    from services.cli.serve_calls import CALL_TIMEOUT_S, serve_deployment

    with serve_deployment("IngestController", args.address) as controller:
        assignment = controller.scale.remote(args.num_actors).result(timeout_s=CALL_TIMEOUT_S)
    print(f"{len(assignment)} ingest actor{'' if len(assignment) == 1 else 's'}")
    for index, partitions in enumerate(assignment):
        print(f"  actor {index}: partitions {', '.join(map(str, partitions))}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    """Send frames of one camera (``--synthetic`` or ``--images DIR``) at ``--fps``."""
    from services.frame_path.producer import FrameProducer, ensure_topics, produce, record_limit

    config = config_from_args(args)
    config.camera(args.camera)  # an unknown id fails here (UnknownCameraError, exit 2) with the configured ones
    ensure_topics(config.kafka, max_message_bytes=record_limit(config.limits))
    source = "synthetic" if args.synthetic else Path(args.images)
    with FrameProducer.from_config(config) as producer:
        stats = produce(producer, args.camera, source, fps=args.fps, count=args.count, size=args.size, seed=args.seed)
    rate = stats.frames / stats.seconds if stats.seconds > 0 else 0.0
    print(f"sent {stats.frames} frames ({stats.bytes / 1e6:.1f} MB) of {args.camera} in {stats.seconds:.1f} s "
          f"({rate:.1f} frames/s) to partitions {sorted(stats.partitions)}")  # fmt: skip
    return 0


def cmd_serve_config(args: argparse.Namespace) -> int:
    """Print the ``applications`` section for ``serve deploy`` or a KubeRay ``RayService``'s ``serveConfigV2``."""
    import yaml

    from services.serve_app import serve_config

    print(yaml.safe_dump({"applications": [serve_config(config_from_args(args), args.config_path)]}, sort_keys=False))
    return 0
