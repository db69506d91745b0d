"""``zsad up``, ``zsad down``, ``zsad status`` and ``zsad produce``: run and feed the local stack."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.options import STACK_DIR, add_config_option, config_from_args
from zsad_core.errors import ZsadError

if TYPE_CHECKING:
    from services.local_stack.stack_process import StackState

START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 90.0


class StackError(ZsadError, RuntimeError):
    """The local stack did not start, is not running, or did not stop."""

    reason = "stack"


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

    status = commands.add_parser("status", help="per-camera results, ingest actors and the dashboard URL")
    add_config_option(status)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)

    serve_config = commands.add_parser(
        "serve-config", help="print the Serve config (serveConfigV2) that runs the app with a config file"
    )
    add_config_option(serve_config)
    serve_config.add_argument("--config-path", default="/etc/zsad/config.yaml",
                              help="where the config file will be on the cluster's nodes")
    serve_config.set_defaults(func=cmd_serve_config)

    produce = commands.add_parser("produce", help="send frames of one camera to the frames topic")
    add_config_option(produce)
    produce.add_argument("--camera", required=True)
    source = produce.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of JPEG/PNG files")
    source.add_argument("--synthetic", action="store_true", help="procedural products with synthetic defects")
    produce.add_argument("--fps", type=float, default=0.0, help="frames per second (0: as fast as possible)")
    produce.add_argument("--count", type=int, help="frames to send (default: a folder once, synthetic forever)")
    produce.add_argument("--size", type=int, default=256, help="side of synthetic frames")
    produce.add_argument("--seed", type=int, default=0)
    produce.set_defaults(func=cmd_produce)


def running_stack() -> StackState | None:
    """The local stack's state, or ``None`` when none was started here or its process is gone."""
    from services.local_stack.stack_process import StackState, process_alive

    state = StackState.read(STACK_DIR)
    if state is not None and state.status != "failed" and not process_alive(state.pid):
        return None  # a stale file of a stack that died without cleaning up
    return state


def cmd_up(args: argparse.Namespace) -> int:
    """Start the stack in the background (or the foreground) and print where everything is."""
    from services.local_stack.stack_process import STATE_NAME, main

    state = running_stack()
    if state is not None and state.status in ("ready", "starting"):
        print(f"the local stack is already running (pid {state.pid})")
        _print_state(state)
        return 0
    if state is not None and state.status == "stopping":
        raise StackError(f"the local stack (pid {state.pid}) is still stopping; run `zsad up` again when it is gone")
    STACK_DIR.mkdir(parents=True, exist_ok=True)
    (STACK_DIR / STATE_NAME).unlink(missing_ok=True)
    command = ["--dir", str(STACK_DIR)] + (["--config", args.config] if args.config else [])
    command += ["--external"] if args.external else []
    # getattr: `zsad demo` calls this with a Namespace of its own that has no such option.
    command += ["--rotate-redis-password"] if getattr(args, "rotate_redis_password", False) else []
    if args.foreground:
        return main(command)
    log_path = STACK_DIR / "stack.log"
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own module, argv list
            [sys.executable, "-m", "services.local_stack.stack_process", *command],
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    print(f"starting the local stack (pid {process.pid}, log {log_path}) ...", flush=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        state = running_stack()
        if state is not None and state.status == "ready":
            _print_state(state)
            return 0
        if state is not None and state.status == "failed":
            raise StackError(f"the local stack failed to start: {state.error} (log {log_path})")
        if process.poll() is not None:
            raise StackError(f"the stack process exited with code {process.returncode}; log {log_path}")
        time.sleep(0.5)
    cmd_down(argparse.Namespace())  # stop what did start
    raise StackError(f"the local stack was not ready after {START_TIMEOUT_S:.0f} s; log {log_path}")


def _print_state(state) -> None:
    print(f"dashboard   {state.dashboard_url}  (Ray's token authentication: the token is in ~/.ray/auth_token)")
    print(f"serve       {state.serve_url}  (GET: ingest status)")
    print(f"metrics     {state.metrics_url}  (Prometheus text; the dashboard's Metrics tab)")
    print(f"kafka       {state.kafka_bootstrap}")
    print(f"redis       {state.redis_url}  (password in {state.config_path}, mode 0600)")
    print(f"config      {state.config_path}")
    print("next: zsad produce --camera cam1 --synthetic --count 100; zsad status; zsad results --camera cam1")


def cmd_down(args: argparse.Namespace) -> int:
    """SIGTERM the stack process and wait until it has stopped everything."""
    from services.local_stack.stack_process import CONFIG_NAME, STATE_NAME, StackState, process_alive, runs

    state = StackState.read(STACK_DIR)
    if state is None:
        print("no local stack is running")
        return 0
    if not runs(state.pid, "services.local_stack.stack_process"):  # gone, or its PID now belongs to another program
        state.pid = -1
    if state.pid > 0:
        os.kill(state.pid, signal.SIGTERM)
        print(f"stopping the local stack (pid {state.pid}) ...", flush=True)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while state.pid > 0 and process_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    killed = state.pid > 0 and process_alive(state.pid)
    if killed:
        os.kill(state.pid, signal.SIGKILL)
    markers = {"redis": "redis-server", "noida": "noida-db"}
    for name, pid in state.children.items():  # left behind if the stack process died before stopping them
        if pid and runs(pid, markers.get(name, name)):
            os.kill(pid, signal.SIGTERM)
            print(f"stopped orphaned {name} (pid {pid})")
    for name in (STATE_NAME, CONFIG_NAME):  # the stack removes them itself unless it died
        (STACK_DIR / name).unlink(missing_ok=True)
    if killed:
        raise StackError(f"the stack did not stop within {STOP_TIMEOUT_S:.0f} s and was killed")
    print("stopped")
    return 0


def ingest_status(serve_url: str, timeout_s: float = 10.0) -> dict:
    """The ingest controller's status over Serve's HTTP route (``GET``)."""
    with urllib.request.urlopen(serve_url, timeout=timeout_s) as response:  # noqa: S310 - our loopback URL
        return json.loads(response.read())


def cmd_status(args: argparse.Namespace) -> int:
    """Per-camera counts and latencies from Redis; ingest actors from the running app."""
    from services.cli.summaries import camera_summary, format_summary
    from services.frame_path.result_store import ResultStore

    config = config_from_args(args)
    store = ResultStore.from_config(config)
    rows = [camera_summary(store, camera) for camera in config.cameras]
    state = running_stack()
    ingest = None
    if state is not None and state.status == "ready":
        try:
            ingest = ingest_status(state.serve_url)
        except OSError as exc:
            ingest = {"error": str(exc)}
    if args.json:
        print(json.dumps({"cameras": [row.__dict__ for row in rows], "ingest": ingest,
                          "dashboard": state.dashboard_url if state else None}, indent=2))  # fmt: skip
        return 0
    print(format_summary(rows))
    if state is not None:
        print(f"\ndashboard {state.dashboard_url}")
    for actor in (ingest or {}).get("actors", []):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(actor.get("counts", {}).items())) or "idle"
        print(f"{actor.get('name', '?')}: partitions {actor.get('partitions')} in flight {actor.get('in_flight')}; "
              f"{counts}; committed {actor.get('committed')}{' ERROR ' + actor['error'] if actor.get('error') else ''}")
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

    from services.frame_path.serve_app import serve_config

    print(yaml.safe_dump({"applications": [serve_config(config_from_args(args), args.config_path)]}, sort_keys=False))
    return 0
