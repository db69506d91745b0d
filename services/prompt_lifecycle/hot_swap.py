"""Serving's side of the prompt registry: resolve versions for the replicas and follow alias moves live.

Why a watcher thread in each replica: redeploying the Serve app with a new version would restart the
replicas (docs/operations.md), dropping their batches and warm caches. Instead every replica subscribes to the
registry's events channel and, as a fallback for lost messages (pub/sub is at-most-once), re-checks the
aliases it follows every ``check_every_s``. Swaps happen between batches (:meth:`InspectorCore.refresh_prompts`).
Cameras' few-shot reference sets live in a registry of their own kind and are followed the same way
(:class:`ReferenceWatcher`, :meth:`InspectorCore.refresh_references`).
"""

from __future__ import annotations

import json
import logging
import threading

from services.frame_path.inspector import InspectorCore, PromptSwap, ReferenceSwap, ResolvedPrompts, ResolvedReferences
from services.frame_path.metrics import PipelineMetrics
from services.prompt_lifecycle.prompt_registry import ALIASES, PromptRegistry

log = logging.getLogger(__name__)

CHECK_EVERY_S = 30.0


class RegistryPrompts:
    """A :class:`~services.frame_path.inspector.PromptSource` over the registry: resolve, verify the files."""

    def __init__(self, registry: PromptRegistry) -> None:
        self.registry = registry

    def resolve_prompts(self, method: str, version_or_alias: str) -> ResolvedPrompts:
        """The concrete version ``version_or_alias`` names now, in a local directory after its files passed the
        hash check (copied from the store into this node's cache when the store is remote).

        Raises:
            RegistryError: unknown method, version or alias.
            CorruptArtifactError: the files no longer match the registered record.
        """
        entry = self.registry.resolve(method, version_or_alias)
        return ResolvedPrompts(entry.version, self.registry.materialise(entry))


class PromptWatcher:
    """Swaps prompt versions in a replica when the aliases its cameras follow move.

    Args:
        core: the replica's inspector.
        registry: where aliases live (redis-py clients are thread-safe; pub/sub gets its own connection).
        replica: this replica's name, for audit entries.
        metrics: where swap failures are counted; ``None`` outside Ray.
        check_every_s: the fallback re-check interval.
    """

    def __init__(
        self,
        core: InspectorCore,
        registry: PromptRegistry,
        *,
        replica: str,
        metrics: PipelineMetrics | None = None,
        check_every_s: float = CHECK_EVERY_S,
    ) -> None:
        self.core = core
        self.registry = registry
        self.replica = replica
        self.metrics = metrics
        self.check_every_s = check_every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prompt-watcher", daemon=True)

    def start(self) -> PromptWatcher:
        """Subscribe and start watching in a daemon thread."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(timeout_s)

    def _followed(self) -> set[str]:
        """The registry subjects whose alias moves concern this replica."""
        return {key.method for key in self.core.methods if key.prompt_version is not None}

    def _refresh(self, subject: str | None) -> list[PromptSwap]:
        return self.core.refresh_prompts(subject)

    def _run(self) -> None:
        followed = self._followed()
        if not followed:
            return
        while not self._stop.is_set():
            try:
                self._watch(followed)
            except Exception as exc:  # noqa: BLE001 - Redis away: retry; the replica keeps serving meanwhile
                log.warning("prompt watcher: %s; retrying", exc)
                self._stop.wait(1.0)

    def _watch(self, followed: set[str]) -> None:
        pubsub = self.registry.client.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(self.registry.events_channel)
        try:
            self.apply(self._refresh(None))  # catch up with moves made while not subscribed
            waited = 0.0
            while not self._stop.is_set():
                message = pubsub.get_message(timeout=1.0)
                waited += 1.0
                if message is not None:
                    method = _event_method(message.get("data"))
                    if method in followed:
                        self.apply(self._refresh(method))
                elif waited >= self.check_every_s:
                    waited = 0.0
                    self.apply(self._refresh(None))
        finally:
            pubsub.close()

    def apply(self, swaps: list[PromptSwap]) -> None:
        """Report failed swaps: log (done by the core), metric, and an audit entry next to the promotion."""
        for swap in swaps:
            if swap.swapped:
                continue
            if self.metrics is not None:
                self.metrics.prompt_load_failed(swap.method, swap.error_reason)
            try:
                self.registry.record_serving_refusal(
                    swap.method, swap.follows, swap.old_version,
                    actor=self.replica, cause=swap.error_reason, detail=swap.error_detail,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the log line already says it
                log.warning("could not audit the refused load: %s", exc)


def _event_method(data: object) -> str | None:
    try:
        event = json.loads(data.decode() if isinstance(data, bytes) else str(data))
    except (ValueError, UnicodeDecodeError):
        return None
    return event.get("method") if isinstance(event, dict) else None


class RegistryReferences:
    """A :class:`~services.frame_path.inspector.ReferenceSource` over the reference registry: resolve, verify."""

    def __init__(self, registry: PromptRegistry) -> None:
        self.registry = registry

    def resolve_references(self, camera: str, version_or_alias: str) -> ResolvedReferences | None:
        """The set ``version_or_alias`` of ``camera`` names now, in a local directory after its files passed the
        hash check (copied into this node's cache when the store is remote); ``None``
        while the alias is not set (an alias is never unset once set: a rollback needs an earlier version).

        Raises:
            RegistryError: unknown camera, version, or an alias name that does not exist.
            CorruptArtifactError: the files no longer match the registered record.
        """
        if version_or_alias in ALIASES and version_or_alias not in self.registry.aliases(camera):
            return None
        entry = self.registry.resolve(camera, version_or_alias)
        return ResolvedReferences(entry.version, self.registry.materialise(entry))


class ReferenceWatcher(PromptWatcher):
    """Swaps cameras' reference sets in a replica when the aliases they follow move (the reference registry's
    events), with the same fallback re-check and refusal audit as prompts."""

    def _followed(self) -> set[str]:
        return {key.references[0] for key in self.core.methods if key.references is not None}

    def _refresh(self, subject: str | None) -> list[ReferenceSwap]:  # type: ignore[override]
        return self.core.refresh_references(subject)

    def apply(self, swaps: list[ReferenceSwap]) -> None:  # type: ignore[override]
        """Audit refused loads next to the promotion, in the reference registry (the log line is the core's)."""
        for swap in swaps:
            if swap.swapped:
                continue
            try:
                self.registry.record_serving_refusal(
                    swap.camera, swap.follows, swap.old_version,
                    actor=self.replica, cause=swap.error_reason, detail=swap.error_detail,
                )  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - the log line already says it
                log.warning("could not audit the refused reference load: %s", exc)
