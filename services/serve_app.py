"""The Ray Serve application: the ``Inspector`` model replicas and the ``IngestController`` that feeds them.

Why ingest lives in the same application: one ``serve run``/``serve deploy``/KubeRay ``RayService`` then
starts, upgrades and stops the whole pipeline, and ``serve build services.serve_app:build_app`` describes all
of it. The controller is one replica that hosts the :class:`~services.frame_path.supervisor.IngestSupervisor`; if it
dies, Serve restarts it and its new actors resume from the committed offsets.

Over HTTP (route prefix ``/zsad`` by default) the ingress is the operator's web view
(:mod:`services.operator_view`); ``GET /zsad/api/ingest`` with a viewer token returns the ingest status.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from services.config import ZsadConfig, load_config
from services.frame_path.decoding import FrameAck, FrameRequest

log = logging.getLogger(__name__)

APP_NAME = "zsad"
INGEST_SHUTDOWN_S = 60.0
ROUTE_PREFIX = "/zsad"


# Serve's access log writes one line per frame; the pipeline's own metrics carry that information.
_QUIET = {"enable_access_log": False}


@serve.deployment(name="Inspector", max_ongoing_requests=64, logging_config=_QUIET)
class Inspector:
    """One backbone per distinct architecture, the cameras' methods, and the Redis writer.

    A :class:`~services.frame_path.batcher.FreeModelBatcher` collects frames from every ingest actor into a batch
    whenever the model is free; a batch runs one vision forward per distinct vision path over all its cameras'
    frames, then one head per camera group (:class:`InspectorCore`).
    """

    def __init__(self, config: ZsadConfig) -> None:
        import ray
        import torch

        from services.frame_path.batcher import FreeModelBatcher
        from services.frame_path.inspector import InspectorCore
        from services.frame_path.metrics import PipelineMetrics
        from services.prompt_lifecycle.hot_swap import (
            RegistryPrompts,
            RegistryReferences,
            prompt_follower,
            reference_follower,
        )
        from services.stores.artifact_registry import ArtifactRegistry, reference_registry
        from services.stores.camera_settings import CameraSettingsStore
        from services.stores.result_store import ResultStore

        serving = config.serving
        # Ray sets the thread count to the actor's CPUs; the configured value wins, as a busy neighbour on a
        # small box makes torch's default several times slower (docs/operations.md, platform notes).
        torch.set_num_threads(serving.torch_threads)
        device = "cuda" if serving.num_gpus > 0 and torch.cuda.is_available() else "cpu"
        metrics = PipelineMetrics(config)
        store = ResultStore.from_config(config)
        # One client (its pool) for results and registry reads; each follower's pub/sub takes its own connection.
        registry = ArtifactRegistry.from_config(config.registry, store.client)
        references = reference_registry(config, store.client)
        replica = ray.get_runtime_context().get_actor_name() or "inspector"
        self.core = InspectorCore(config, store, device=device, metrics=metrics, prompts=RegistryPrompts(registry),
                                  references=RegistryReferences(references), replica=replica)  # fmt: skip
        self.unhealthy_after = serving.unhealthy_after_model_failures
        self.registry, self.references, self.replica, self.metrics = registry, references, replica, metrics
        # A worker thread keeps the event loop free for health checks and the next batch's arrivals.
        self.batcher = FreeModelBatcher(lambda requests: asyncio.to_thread(self.core.process, requests),
                                        serving.max_batch_size, serving.batch_wait_timeout_s)  # fmt: skip
        self.followers = [
            prompt_follower(self.core, registry, replica=replica, metrics=metrics),
            reference_follower(self.core, references, replica=replica),
            _settings_follower(CameraSettingsStore(registry, config), self.core),
        ]
        # Threads last: a constructor that fails before this line leaves nothing running behind it.
        for follower in self.followers:
            follower.start()

    async def score(self, request: FrameRequest) -> FrameAck:
        """Score and store one frame within the next batch; its acknowledgement (see :meth:`InspectorCore.process`)."""
        return await self.batcher.submit(request)

    async def check_health(self) -> None:
        """Serve's health check: fails after consecutive batches the model could not score at all, so Serve
        replaces this replica (see :meth:`InspectorCore.check_health`)."""
        self.core.check_health(self.unhealthy_after)

    async def describe(self) -> dict[str, Any]:
        """Cameras, methods, prompt versions and device of this replica."""
        return self.core.describe()

    async def refresh_prompts(self) -> list[dict[str, Any]]:
        """Re-resolve followed prompt versions now (the prompt follower does this on every alias move)."""
        from services.prompt_lifecycle.hot_swap import report_refusals

        swaps = await asyncio.to_thread(self.core.refresh_prompts)
        # Audit writes block on Redis.
        await asyncio.to_thread(report_refusals, self.registry, swaps, replica=self.replica, metrics=self.metrics)
        return [dataclasses.asdict(swap) for swap in swaps]

    async def refresh_references(self) -> list[dict[str, Any]]:
        """Re-resolve the cameras' reference sets now (the reference follower does this on every alias move)."""
        from services.prompt_lifecycle.hot_swap import report_refusals

        swaps = await asyncio.to_thread(self.core.refresh_references)
        await asyncio.to_thread(report_refusals, self.references, swaps, replica=self.replica)
        return [dataclasses.asdict(swap) for swap in swaps]

    async def replica_actor_name(self) -> str:
        """This replica's Ray actor name (operators and failure tests use it to find the process)."""
        import ray

        return ray.get_runtime_context().get_actor_name() or ""

    async def __call__(self, request: Any) -> dict[str, Any]:
        """HTTP ``GET``: what this replica serves."""
        return {"replica": await self.replica_actor_name(), "pid": os.getpid(), **self.core.describe()}

    def __del__(self) -> None:
        """Serve's shutdown hook (also run by the garbage collector): stop the followers, if they were started.

        All at once: each follower's thread notices the stop only at its next pub/sub read (up to a second), so
        stopping them one after another made every replica's shutdown wait up to three seconds.
        """
        stopping = [threading.Thread(target=follower.stop, daemon=True) for follower in getattr(self, "followers", ())]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()


def _settings_follower(store: Any, core: Any) -> Any:
    """A follower (not started) of the cameras' live settings; the stored settings are applied here, before the
    first batch, when Redis answers, else as soon as it does."""
    import redis

    from services.frame_path.settings_follower import CameraSettingsFollower

    def apply(settings: Any) -> None:
        core.apply_settings(settings, store.drift_reference(settings))

    follower = CameraSettingsFollower(store, core.config.cameras, apply)
    try:
        follower.refresh(follower.cameras)
    except redis.RedisError as exc:
        log.warning("camera settings unreadable at start, serving the configured ones until Redis answers: %s", exc)
    return follower


@serve.deployment(name="IngestController", logging_config=_QUIET)
class IngestController:
    """Hosts the ingest supervisor; drains the actors (final commits) when the application is deleted."""

    async def __init__(self, config: ZsadConfig, inspector: DeploymentHandle) -> None:
        from services.frame_path.supervisor import IngestSupervisor

        logging.basicConfig(level=logging.INFO)
        logging.getLogger("kafka").setLevel(logging.WARNING)
        self.supervisor = IngestSupervisor(config, inspector)
        await self.supervisor.start()

    async def status(self) -> dict[str, Any]:
        """Partitions, assignment and every ingest actor's counters."""
        return await self.supervisor.status()

    async def scale(self, num_actors: int) -> list[list[int]]:
        """Change the number of ingest actors; partitions are reassigned after a drain."""
        return await self.supervisor.scale(num_actors)

    async def __call__(self, request: Any) -> dict[str, Any]:
        """HTTP ``GET``: the ingest status."""
        return await self.status()

    async def __del__(self) -> None:
        await self.supervisor.shutdown()


@serve.deployment(name="OperatorView", logging_config=_QUIET)
@serve.ingress()
class OperatorView:
    """The application's HTTP ingress: the operator's web view (:mod:`services.operator_view`).

    It holds a handle to the ingest controller for the overview's ingest status; it is not on the frame path.
    """

    def __init__(self, config: ZsadConfig, ingest: DeploymentHandle) -> None:
        from services.operator_view.app import ViewBackend

        self.backend = ViewBackend(config, ingest)

    def __serve_build_asgi_app__(self) -> Any:
        """Serve calls this on the replica after ``__init__``: the FastAPI app bound to this replica's backend."""
        from services.operator_view.app import build_api

        return build_api(self.backend)


def deployment_options(config: ZsadConfig) -> dict[str, dict[str, Any]]:
    """Each deployment's Serve options for ``config``, in the terms of ``serve build`` output.

    Why one function: the application applies exactly these, and ``zsad serve-config`` prints them for
    Kubernetes manifests (a test compares the RayService with them), so code and manifests cannot drift.
    """
    serving = config.serving
    inspector: dict[str, Any] = {
        "max_ongoing_requests": serving.max_ongoing_requests or max(64, 4 * serving.max_batch_size),
        "graceful_shutdown_timeout_s": serving.graceful_shutdown_timeout_s,
        "health_check_period_s": serving.health_check_period_s,
        "ray_actor_options": {"num_cpus": serving.num_cpus, "num_gpus": serving.num_gpus},
    }
    if serving.resources:
        inspector["ray_actor_options"]["resources"] = dict(serving.resources)
    ingest_actor_options: dict[str, Any] = {"num_cpus": config.ingest.actor_num_cpus}
    if config.ingest.resources:
        ingest_actor_options["resources"] = dict(config.ingest.resources)
    if serving.autoscaling is not None:
        inspector["autoscaling_config"] = serving.autoscaling.model_dump(exclude_none=True)
    else:
        inspector["num_replicas"] = serving.num_replicas
    return {
        "Inspector": inspector,
        "IngestController": {
            "num_replicas": 1,
            # Deleting the app waits for __del__: the actors' drain (30 s at most) and final commits.
            "graceful_shutdown_timeout_s": INGEST_SHUTDOWN_S,
            "ray_actor_options": ingest_actor_options,
        },
        # A tenth of a CPU and one replica: the page must never take CPU the model replicas could use.
        "OperatorView": {"num_replicas": 1, "ray_actor_options": {"num_cpus": config.view.num_cpus}},
    }


def serve_config(config: ZsadConfig, config_path: str) -> dict[str, Any]:
    """The ``applications`` entry of a Serve config (``serveConfigV2``) running this app with ``config_path``."""
    options = deployment_options(config)
    return {
        "name": APP_NAME,
        "route_prefix": ROUTE_PREFIX,
        "import_path": "services.serve_app:build_app",
        "args": {"config": config_path},
        "deployments": [{"name": name, **settings} for name, settings in options.items()],
    }


def frame_path_app(config: ZsadConfig) -> serve.Application:
    """The frame path of ``config`` alone: the Inspector replicas and the IngestController feeding them, the
    controller as ingress (``GET``: the ingest status).

    :func:`app_from_config` puts the operator's view in front of it. The tests of the frame path run it bare: the
    view has tests of its own, and its replica costs about 2 s of CPU at every start.
    """
    options = deployment_options(config)
    inspector = Inspector.options(**options["Inspector"]).bind(config)
    return IngestController.options(**options["IngestController"]).bind(config, inspector)


def app_from_config(config: ZsadConfig) -> serve.Application:
    """The bound application for ``config``, the operator's view in front of the frame path (what ``zsad up``,
    ``serve run`` and the KubeRay manifests run)."""
    options = deployment_options(config)
    return OperatorView.options(**options["OperatorView"]).bind(config, frame_path_app(config))


def build_app(args: dict[str, str]) -> serve.Application:
    """Application builder for ``serve run/build/deploy services.serve_app:build_app config=FILE``.

    Args:
        args: ``{"config": path}``; without it the embedded defaults. Secrets come from ``ZSAD_*``
            environment variables (Kubernetes secrets), never from the Serve config.
    """
    return app_from_config(load_config(args.get("config")))
