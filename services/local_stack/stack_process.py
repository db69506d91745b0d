"""The local stack of ``zsad up``: redis-server, the noida-db broker, a Ray head with the dashboard, the app.

Why a long-lived process of its own: the Ray head started with ``ray.init(address="local")`` belongs to the
process that started it, and so do the broker and Redis children. ``zsad up`` spawns ``python -m
services.local_stack.stack_process`` in a new session, waits for it to say ``ready`` in its state file, and returns;
``zsad down`` sends it SIGTERM, and it stops everything in order: the camera gateways of the ``gateways:`` section
first (they flush what they read to the broker), then the application (the ingest actors drain and commit), then
Serve and Ray, then the broker and Redis. Only what this stack started is stopped
(``ray stop`` would stop every Ray cluster on the machine).

With ``--external`` the stack starts only Ray and the application and uses the brokers and Redis of the
configuration, which is how the same code meets a real Kafka and Redis.

What survives ``zsad down`` and ``zsad up``: Redis keeps its append-only file in ``<stack dir>/redis`` and its
password in ``<stack dir>/redis.password`` (mode 0600, replaced only by ``--rotate-redis-password``), and the
broker keeps its topics and committed offsets in ``<stack dir>/noida``; results and offsets then stay consistent.
Everything listens on 127.0.0.1 only, Ray included (see :func:`_start_ray_and_app`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import SecretStr

from services.config import ZsadConfig, load_config
from services.local_stack.gateway_processes import start_gateways, stop_gateways
from services.local_stack.service_processes import (
    HOST,
    NoidaBroker,
    PrometheusServer,
    RedisServer,
    ServiceError,
    free_port,
    port_in_use,
)

log = logging.getLogger(__name__)

# Ray's switch for multi-node clusters, read when Ray is imported (ray._private.ray_constants).
RAY_CLUSTER_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

STATE_NAME = "state.json"
CONFIG_NAME = "config.yaml"
REDIS_AUTH_FILE = "redis.password"
VIEW_TOKENS_FILE = "view.tokens"
LOG_NAME = "stack.log"
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
PROMETHEUS_PORT = 9090


@dataclass
class StackState:
    """What ``zsad up`` started, written to ``<stack dir>/state.json`` for the other commands."""

    pid: int
    status: str  # starting | ready | failed | stopping
    started_at: float
    config_path: str
    error: str = ""
    ray_address: str = ""
    dashboard_url: str = ""
    serve_url: str = ""
    redis_url: str = ""
    kafka_bootstrap: str = ""
    metrics_url: str = ""
    prometheus_url: str = ""
    children: dict[str, int] = field(default_factory=dict)
    gateways: dict[str, int] = field(default_factory=dict)  # camera -> pid of its `zsad gateway run`

    def write(self, stack_dir: Path) -> None:
        """Replace the state file atomically (readers never see half a file)."""
        path = stack_dir / STATE_NAME
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2))
        temporary.replace(path)

    @classmethod
    def read(cls, stack_dir: Path) -> StackState | None:
        """The state file, or ``None`` when no stack was started here."""
        try:
            return cls(**json.loads((stack_dir / STATE_NAME).read_text()))
        except FileNotFoundError:
            return None


def runs(pid: int, marker: str) -> bool:
    """Whether ``pid`` is alive and its command line contains ``marker`` (a reused PID is someone else)."""
    if not process_alive(pid):
        return False
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return True  # no /proc (not Linux): trust the PID


def process_alive(pid: int) -> bool:
    """Whether a process with ``pid`` runs; an exited child of ours (a zombie) is reaped and counts as gone.

    Why the reaping: ``zsad demo`` starts the stack and later waits for it to stop; without ``waitpid`` the
    exited stack would stay a zombie of the demo process, and ``kill(pid, 0)`` succeeds on zombies.
    """
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
        if reaped == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_config(config: ZsadConfig, path: Path) -> None:
    """Write ``config`` as YAML with its secrets in clear, readable by the owner only (mode 0600)."""

    def reveal(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {key: reveal(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [reveal(item) for item in value]
        return value

    document = reveal(config.model_dump(mode="python"))
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # the mode above applies only when the file is created
    with os.fdopen(descriptor, "w") as handle:
        handle.write("# Written by `zsad up`: the effective configuration of the running local stack.\n")
        yaml.safe_dump(document, handle, sort_keys=False)


def redis_password(stack_dir: Path, *, rotate: bool = False) -> str:
    """The local Redis password: generated on the first start, then the same one on every restart.

    Why stored: Redis keeps its data across restarts, and clients holding the old configuration (a running
    ``zsad produce``, a notebook) must keep working; a new password on every ``zsad up`` would lock them out of
    the same data. ``rotate`` replaces it. The file is created with mode 0600 and written atomically.
    """
    path = stack_dir / REDIS_AUTH_FILE
    if not rotate:
        try:
            stored = path.read_text().strip()
        except FileNotFoundError:
            stored = ""
        if stored:
            return stored
    password = secrets.token_urlsafe(24)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    temporary.replace(path)
    return password


def view_tokens(stack_dir: Path) -> dict[str, str]:
    """The web view's ``viewer`` and ``operator`` tokens: generated on the first start, kept like the Redis password.

    Why kept: a browser's login and a client's token should survive ``zsad down``/``zsad up``. The file
    (mode 0600, one ``role=token`` a line) is the only place they are written besides the stack's config.
    """
    path = stack_dir / VIEW_TOKENS_FILE
    try:
        stored = dict(line.split("=", 1) for line in path.read_text().split() if "=" in line)
    except FileNotFoundError:
        stored = {}
    if set(stored) >= {"viewer", "operator"} and all(len(stored[role]) >= 16 for role in ("viewer", "operator")):
        return {role: stored[role] for role in ("viewer", "operator")}
    tokens = {role: secrets.token_urlsafe(24) for role in ("viewer", "operator")}
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("".join(f"{role}={token}\n" for role, token in tokens.items()))
    temporary.replace(path)
    return tokens


def prepare_local_ray_driver(address: str) -> None:
    """Call before this process imports Ray to join the local stack's cluster at ``address``.

    Why: Ray rewrites 127.0.0.1 in ``ray.init(address=...)`` to the machine's IP, where the stack's loopback
    node does not listen (the driver then waits for ever), unless multi-node clusters are switched off as in
    the stack itself. And a Ray 2.60 head enables token authentication by default, which a driver must then
    use too (the token is in ``~/.ray/auth_token``); a mode set in the environment wins, as it did for the
    stack started from the same environment. Addresses that are not loopback are left alone: a driver of a
    multi-node cluster must announce a reachable IP.
    """
    host = address.rsplit(":", 1)[0].strip("[]")
    if host in (HOST, "localhost", "::1"):
        os.environ[RAY_CLUSTER_ENV] = "0"
        os.environ.setdefault("RAY_AUTH_MODE", "token")


def _port(preferred: int) -> int:
    return preferred if not port_in_use(preferred) else free_port()


class LocalStack:
    """Starts and stops the pieces in order; :func:`main` runs it as the stack process."""

    def __init__(
        self, config: ZsadConfig, stack_dir: Path, *, external: bool = False, rotate_redis_password: bool = False
    ) -> None:
        self.config = config
        self.stack_dir = stack_dir
        self.external = external
        self.rotate_redis_password = rotate_redis_password
        self.redis: RedisServer | None = None
        self.broker: NoidaBroker | None = None
        self.prometheus: PrometheusServer | None = None
        self.prometheus_port = 0
        self.gateways: dict[str, subprocess.Popen[bytes]] = {}
        self.state = StackState(os.getpid(), "starting", time.time(), str(stack_dir / CONFIG_NAME))

    def start(self) -> None:
        """Bring everything up; on failure stop what started and raise."""
        self.state.write(self.stack_dir)
        try:
            if not self.external:
                self._start_local_services()
            self._with_view_tokens()
            self._plan_prometheus()
            write_config(self.config, self.stack_dir / CONFIG_NAME)
            self._start_ray_and_app()
            self._start_gateways()
        except BaseException as exc:
            self.stop()
            self.state.status, self.state.error = "failed", f"{type(exc).__name__}: {exc}"
            self.state.write(self.stack_dir)  # kept, so `zsad up` can say why
            raise
        self.state.status = "ready"
        self.state.write(self.stack_dir)

    def _start_local_services(self) -> None:
        password = redis_password(self.stack_dir, rotate=self.rotate_redis_password)
        self.redis = RedisServer(data_dir=self.stack_dir / "redis", password=password, persistent=True).start()
        self.broker = NoidaBroker(data_dir=self.stack_dir / "noida").start()
        self.config = self.config.model_copy(
            update={
                "redis": self.config.redis.model_copy(
                    update={"url": self.redis.url, "password": SecretStr(self.redis.password)}
                ),
                "kafka": self.config.kafka.model_copy(update={"bootstrap_servers": [self.broker.bootstrap_servers]}),
            }
        )
        self.state.children = {"redis": self.redis.pid or 0, "noida": self.broker.pid or 0}
        self.state.redis_url, self.state.kafka_bootstrap = self.redis.url, self.broker.bootstrap_servers
        self.state.write(self.stack_dir)

    def _with_view_tokens(self) -> None:
        """Tokens from the configuration (a secret) win; otherwise the stack's generated ones."""
        view = self.config.view
        if view.viewer_token is not None and view.operator_token is not None:
            return
        tokens = view_tokens(self.stack_dir)
        update = {"viewer_token": view.viewer_token or SecretStr(tokens["viewer"]),
                  "operator_token": view.operator_token or SecretStr(tokens["operator"])}  # fmt: skip
        self.config = self.config.model_copy(update={"view": view.model_copy(update=update)})

    def _plan_prometheus(self) -> None:
        """Pick Prometheus's port before anything reads the config, so the web view knows where to query.

        Without Debian's ``prometheus`` (``scripts/bootstrap.sh`` installs it) the stack runs without charts.
        """
        if shutil.which("prometheus") is None:
            log.warning("prometheus is not installed: no metric charts (run scripts/bootstrap.sh)")
            return
        self.prometheus_port = _port(PROMETHEUS_PORT)
        url = f"http://{HOST}:{self.prometheus_port}"
        if self.config.view.prometheus_url is None:
            view = self.config.view.model_copy(update={"prometheus_url": url})
            self.config = self.config.model_copy(update={"view": view})
        # Read by Ray's dashboard when it starts: its Metrics tab then queries this Prometheus.
        os.environ["RAY_PROMETHEUS_HOST"] = url

    def _start_prometheus(self, metrics_port: int) -> None:
        try:
            self.prometheus = PrometheusServer([f"{HOST}:{metrics_port}"], port=self.prometheus_port,
                                               data_dir=self.stack_dir / "prometheus").start()  # fmt: skip
        except ServiceError as exc:
            log.warning("prometheus did not start, so there are no metric charts: %s", exc)
            return
        self.state.children["prometheus"] = self.prometheus.pid or 0
        self.state.prometheus_url = self.prometheus.url
        # On disk at once: a stack killed while Serve still starts leaves it to `stop_stack`'s orphan clean-up.
        self.state.write(self.stack_dir)

    def _start_ray_and_app(self) -> None:
        # Ray binds its GCS, raylet, worker and metrics ports on the node's IP, or on every interface; with a
        # loopback node IP they bind 127.0.0.1. Ray turns a loopback `_node_ip_address` back into the machine's
        # IP unless "Ray clusters" are disabled (which only means that no other node can join this one). Ray
        # reads the variable when it is imported, and every Ray process started from here inherits it.
        os.environ[RAY_CLUSTER_ENV] = "0"
        import ray
        from ray import serve

        from services.frame_path.producer import ensure_topics, record_limit
        from services.prompt_lifecycle.scheduler_actor import ensure_scheduler
        from services.serve_app import APP_NAME, ROUTE_PREFIX, app_from_config

        ensure_topics(self.config.kafka, max_message_bytes=record_limit(self.config.limits))
        dashboard_port = _port(DASHBOARD_PORT)
        metrics_port = free_port()
        context = ray.init(
            _metrics_export_port=metrics_port,
            address="local",
            include_dashboard=True,
            dashboard_host=HOST,
            dashboard_port=dashboard_port,
            logging_level="WARNING",
            _node_ip_address=HOST,
        )
        if self.prometheus_port:
            self._start_prometheus(metrics_port)
        serve_port = _port(SERVE_PORT)
        serve.start(http_options={"host": HOST, "port": serve_port})
        serve.run(app_from_config(self.config), name=APP_NAME, route_prefix=ROUTE_PREFIX, blocking=False)
        ensure_scheduler(self.config.redis)  # runs the `zsad schedule` entries stored in Redis
        self.state.ray_address = context.address_info.get("gcs_address", "")
        self.state.dashboard_url = f"http://{context.dashboard_url or f'{HOST}:{dashboard_port}'}"
        self.state.serve_url = f"http://{HOST}:{serve_port}{ROUTE_PREFIX}/"
        metrics_port = context.address_info.get("metrics_export_port")
        self.state.metrics_url = f"http://{context.address_info['node_ip_address']}:{metrics_port}/metrics"
        self.state.kafka_bootstrap = ",".join(self.config.kafka.bootstrap_servers)
        self.state.redis_url = self.config.redis.url

    def _start_gateways(self) -> None:
        """One ``zsad gateway run`` per ``gateways:`` entry, on the stack's config (its broker and Redis)."""
        if not self.config.gateways:
            return
        self.gateways = start_gateways(self.stack_dir / CONFIG_NAME, self.config.gateways, self.stack_dir)
        self.state.gateways = {camera: process.pid for camera, process in self.gateways.items()}

    def stop(self) -> None:
        """Stop the gateways (they flush), the app (ingest drains and commits), Serve, Ray, the broker and Redis."""
        import ray

        self.state.status = "stopping"
        self.state.write(self.stack_dir)
        if self.gateways:
            stop_gateways(self.gateways)
            log.info("gateways stopped")
        if ray.is_initialized():
            from ray import serve

            try:
                serve.shutdown()
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                log.warning("serve shutdown failed: %s", exc)
            log.info("serve stopped")
            ray.shutdown()
            log.info("ray stopped")
        for service in (self.prometheus, self.broker, self.redis):
            if service is not None:
                service.stop()
                log.info("%s stopped", service.name)
        (self.stack_dir / CONFIG_NAME).unlink(missing_ok=True)
        (self.stack_dir / STATE_NAME).unlink(missing_ok=True)


def run_stack(
    config: Path | None,
    stack_dir: Path,
    *,
    external: bool = False,
    rotate_redis_password: bool = False,
) -> int:
    """Be the stack process: start everything, then wait for SIGTERM/SIGINT and stop it all.

    ``zsad up --foreground`` runs this in the terminal; :func:`services.local_stack.control.start_stack` runs
    it in a process of its own through :func:`main`.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("ZSAD_OFFLINE", "1")
    stack_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(load_config(config), stack_dir, external=external, rotate_redis_password=rotate_redis_password)
    # Until Ray is up, a SIGTERM unwinds start(), which stops whatever was already started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        stack.start()
    except Exception:
        log.exception("the local stack failed to start")
        return 1
    # Installed after ray.init, which sets its own SIGTERM handler (it would exit without stopping anything).
    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    log.info("ready: dashboard %s, serve %s", stack.state.dashboard_url, stack.state.serve_url)
    while not stop_requested.wait(1.0):
        pass
    log.info("stopping")
    stack.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m services.local_stack.stack_process``: :func:`run_stack` with its arguments from ``argv``."""
    parser = argparse.ArgumentParser(prog="python -m services.local_stack.stack_process")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--external", action="store_true")
    parser.add_argument("--rotate-redis-password", action="store_true")
    args = parser.parse_args(argv)
    return run_stack(args.config, args.dir, external=args.external, rotate_redis_password=args.rotate_redis_password)


if __name__ == "__main__":
    sys.exit(main())
