"""Ray, not the broker, decides which ingest actor reads which partition.

Why: consumer-group failover differs between Kafka-compatible brokers (noida-db never evicts a killed member,
so its partitions stall). The supervisor lists the topic's partitions, spreads them over ``num_actors``
:class:`~.ingest_actor.IngestActor` s with ``assign()``, and lets Ray restart a dead actor (``max_restarts``)
with the same partitions; its watch loop restarts the actor's consumer loop, which resumes from the offsets
committed under the group id. Changing the actor count drains every actor (commit) and reassigns; so do
partitions added to the topic (Kafka users add partitions to scale), which the watch loop lists every
``ingest.partition_check_s``: their frames are read from the start of each new partition, and their lag shows
in the status like any other's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from services.config import ZsadConfig

log = logging.getLogger(__name__)

WATCH_EVERY_S = 1.0
CALL_TIMEOUT_S = 10.0
LIST_TIMEOUT_S = 5.0  # longest wait for the topic's partitions on a periodic check (retried at the next)
DRAIN_TIMEOUT_S = 30.0  # longest wait for frames in flight when the actors are reassigned


def assign_partitions(partitions: list[int], num_actors: int) -> list[list[int]]:
    """Round-robin ``partitions`` over ``num_actors``; actors beyond the partition count get none (dropped)."""
    if num_actors <= 0:
        raise ValueError(f"num_actors must be positive, got {num_actors}")
    ordered = sorted(partitions)
    groups = [ordered[index::num_actors] for index in range(num_actors)]
    return [group for group in groups if group]


def topic_partitions(config: ZsadConfig, timeout_s: float = 60.0) -> list[int]:
    """The partitions of the frames topic, waiting up to ``timeout_s`` for the topic to exist."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**config.kafka.client_kwargs(), client_id=f"{config.kafka.client_id}-supervisor")
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            partitions = consumer.partitions_for_topic(config.kafka.frames_topic)
            if partitions:
                return sorted(partitions)
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {config.kafka.frames_topic!r} does not exist after {timeout_s:.0f} s")
            time.sleep(0.5)
    finally:
        consumer.close()


class IngestSupervisor:
    """Creates, watches and scales the ingest actors of one application.

    Args:
        config: the system configuration.
        inspector: a ``DeploymentHandle`` to the inspector deployment, handed to every actor.
        name: prefix of the actors' names in logs and metrics.
    """

    def __init__(self, config: ZsadConfig, inspector: Any, *, name: str = "zsad-ingest") -> None:
        self.config = config
        self.inspector = inspector
        self.name = name
        self.partitions: list[int] = []
        self.num_actors = config.ingest.num_actors  # asked for; fewer run when there are fewer partitions
        self.actors: list[Any] = []
        self.assignment: list[list[int]] = []
        self.restarts_seen = 0
        self._generation = 0
        self._watch_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Discover the partitions, start the actors and the watch loop."""
        self.partitions = await asyncio.to_thread(topic_partitions, self.config)
        async with self._lock:
            await self._spawn(self.num_actors)
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _spawn(self, num_actors: int) -> None:
        import ray

        from services.frame_path.ingest_actor import IngestActor

        remote_cls = ray.remote(IngestActor)
        self._generation += 1
        self.assignment = assign_partitions(self.partitions, num_actors)
        self.actors = [
            remote_cls.options(
                num_cpus=self.config.ingest.actor_num_cpus,  # I/O and decode threads; 0 on one box
                resources=dict(self.config.ingest.resources),  # the controller's nodes (deployment_options)
                max_restarts=-1,
                max_concurrency=64,
            ).remote(self.config, group, self.inspector, f"{self.name}-g{self._generation}-{index}")
            for index, group in enumerate(self.assignment)
        ]
        # A slow actor start (imports on a busy box) is not fatal: the watch loop starts its loop later.
        await asyncio.gather(*(self._call(actor.ensure_running) for actor in self.actors), return_exceptions=True)
        log.info("%s: %d actors over partitions %s", self.name, len(self.actors), self.assignment)

    async def _call(self, method: Any, *args: Any) -> Any:
        return await asyncio.wait_for(method.remote(*args), timeout=CALL_TIMEOUT_S)

    async def _watch(self) -> None:
        next_listing = time.monotonic() + self.config.ingest.partition_check_s
        while True:
            await asyncio.sleep(WATCH_EVERY_S)
            if time.monotonic() >= next_listing:
                await self._read_added_partitions()
                next_listing = time.monotonic() + self.config.ingest.partition_check_s
            async with self._lock:
                for actor in self.actors:
                    try:
                        if await self._call(actor.ensure_running):
                            self.restarts_seen += 1
                            log.warning(
                                "%s: an ingest actor restarted; its loop resumes from committed offsets", self.name
                            )
                    except Exception as exc:  # noqa: BLE001 - restarting actors answer with errors for a while
                        log.info("%s: ingest actor not ready: %s", self.name, exc)

    async def _read_added_partitions(self) -> None:
        """List the topic's partitions; when some were added, drain the actors and reassign them all."""
        try:
            listed = await asyncio.to_thread(topic_partitions, self.config, LIST_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - the broker is away: the actors already report that; next check
            log.info("%s: partitions of %s not listed: %s", self.name, self.config.kafka.frames_topic, exc)
            return
        added = sorted(set(listed) - set(self.partitions))
        if not added:
            return
        log.warning("%s: partitions %s were added to %s; reassigning", self.name, added, self.config.kafka.frames_topic)
        async with self._lock:
            self.partitions = listed
            await self._stop_actors(DRAIN_TIMEOUT_S)
            await self._spawn(self.num_actors)

    async def scale(self, num_actors: int, drain_timeout_s: float = DRAIN_TIMEOUT_S) -> list[list[int]]:
        """Drain every actor (their finished offsets are committed), then reassign over ``num_actors``."""
        if num_actors <= 0:
            raise ValueError(f"num_actors must be positive, got {num_actors}")
        async with self._lock:
            await self._stop_actors(drain_timeout_s)
            self.num_actors = num_actors
            await self._spawn(num_actors)
            return self.assignment

    async def _stop_actors(self, drain_timeout_s: float) -> list[dict[str, Any]]:
        import ray

        async def stop(actor: Any) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(actor.stop.remote(drain_timeout_s), timeout=drain_timeout_s + 10)
            except Exception as exc:  # noqa: BLE001 - a dead actor has nothing to drain
                return {"error": str(exc)}

        final = list(await asyncio.gather(*(stop(actor) for actor in self.actors)))
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        return final

    async def shutdown(self, drain_timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Stop watching and stop every actor after draining it."""
        if self._watch_task is not None:
            self._watch_task.cancel()
        async with self._lock:
            return await self._stop_actors(drain_timeout_s)

    async def status(self) -> dict[str, Any]:
        """Per-actor stats (``error`` for an actor that does not answer) and the assignment."""

        async def stats(actor: Any) -> dict[str, Any]:
            try:
                return await self._call(actor.stats)
            except Exception as exc:  # noqa: BLE001 - reported, not raised: status must always answer
                return {"error": f"{type(exc).__name__}: {exc}"}

        return {
            "topic": self.config.kafka.frames_topic,
            "group_id": self.config.kafka.group_id,
            "partitions": self.partitions,
            "assignment": self.assignment,
            "restarts_seen": self.restarts_seen,
            "actors": list(await asyncio.gather(*(stats(actor) for actor in self.actors))),
        }
