"""Calls from the command line into the running Serve application's deployments, on any Ray cluster.

Why: ``zsad status`` reads the local stack's ingest through the web view, but a cluster that ``zsad up`` did not
start (a KubeRay ``RayService``, a shared development cluster) has no local state to find it by; with
``--address`` the command joins that cluster as a driver and asks the ingest controller itself, as ``zsad ingest
scale`` always does, and ``zsad replay`` sends its frames to the ``Inspector`` the same way. Ray is imported only
here, so the other commands stay quick.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from zsad_core.errors import ZsadError

CALL_TIMEOUT_S = 120.0


class ServeAppError(ZsadError, ConnectionError):
    """No Ray cluster to join, or the Serve application is not running on it."""

    reason = "serve_app"


def local_ray_address() -> str | None:
    """The Ray address of the local stack when it is ready, else ``None``."""
    from services.local_stack.control import running_stack
    from services.state_home import stack_dir

    stack = running_stack(stack_dir())
    return stack.ray_address if stack is not None and stack.status == "ready" else None


@contextmanager
def serve_deployment(deployment: str, address: str | None) -> Iterator[Any]:
    """A handle to ``deployment`` (``IngestController``, ``Inspector``) of the application, joining the cluster at
    ``address`` (default the local stack's) for the duration, unless this process is in a cluster already.

    Raises:
        ServeAppError: no address and no local stack, another cluster joined already, or no such application.
        ConnectionError: nothing listens at ``address`` (at once, where ``ray.init`` would retry for minutes).
    """
    from services.local_stack.stack_process import prepare_local_ray_driver

    address = address or local_ray_address()
    if address is None:
        raise ServeAppError("no Ray cluster: start the local stack (zsad up) or give --address HOST:PORT")
    _check_listening(address)
    prepare_local_ray_driver(address)  # before Ray is imported
    import ray
    from ray import serve

    from services.serve_app import APP_NAME

    joined = False
    if ray.is_initialized():  # a driver joins one cluster: only this one will do
        current = ray.get_runtime_context().gcs_address
        if current != address:
            raise ServeAppError(f"this process is already connected to Ray at {current}, not {address}")
    else:
        ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        joined = True
    try:
        try:
            handle = serve.get_deployment_handle(deployment, app_name=APP_NAME)
        except Exception as exc:  # Serve raises several types for a missing application
            raise ServeAppError(f"the Serve application {APP_NAME!r} is not running on Ray at {address}: "
                                f"{' '.join(str(exc).split())}") from exc  # fmt: skip
        yield handle
    finally:
        if joined:
            ray.shutdown()


def _check_listening(address: str, timeout_s: float = 3.0) -> None:
    """Fail at once when nothing listens at the cluster's address: ``ray.init`` would retry for minutes."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {address}: {exc}") from None
