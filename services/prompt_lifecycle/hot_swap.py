"""Serving's side of the prompt and reference registries: resolve versions for the replicas and follow alias moves.

Why followers in each replica: redeploying the Serve app with a new version would restart the replicas
(docs/operations.md), dropping their batches and warm caches. Instead every replica follows the registry's
events channel with an :class:`~services.event_follower.EventFollower` (with its periodic re-check for lost
messages) and swaps between batches (:meth:`InspectorCore.refresh_prompts`). Cameras' few-shot reference sets
live in a registry of their own kind and are followed the same way (:meth:`InspectorCore.refresh_references`).
Which methods and sets are followed is decided by the core at each event, so a camera switched to an alias
live follows its next move.
"""

from __future__ import annotations

import logging

from services.event_follower import CHECK_EVERY_S, EventFollower
from services.frame_path.camera_method import ResolvedPrompts, ResolvedReferences
from services.frame_path.inspector import InspectorCore, Swap
from services.frame_path.metrics import PipelineMetrics
from services.stores.artifact_registry import ALIASES, ArtifactRegistry

log = logging.getLogger(__name__)

class RegistryPrompts:
    """A :class:`~services.frame_path.camera_method.PromptSource` over the registry: resolve, verify the files."""

    def __init__(self, registry: ArtifactRegistry) -> None:
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


def prompt_follower(
    core: InspectorCore,
    registry: ArtifactRegistry,
    *,
    replica: str,
    metrics: PipelineMetrics | None = None,
    check_every_s: float = CHECK_EVERY_S,
) -> EventFollower:
    """A follower (not started) that swaps prompt versions in ``core`` when the aliases its cameras follow move.

    Args:
        core: the replica's inspector.
        registry: where aliases live (redis-py clients are thread-safe; pub/sub gets its own connection).
        replica: this replica's name, for audit entries.
        metrics: where swap failures are counted; ``None`` outside Ray.
        check_every_s: the fallback re-check interval.
    """

    def check(method: str | None) -> None:
        report_refusals(registry, core.refresh_prompts(method), replica=replica, metrics=metrics)

    return EventFollower(registry.client, registry.events_channel, subject_of=_subject, check=check,
                         name="prompt-follower", check_every_s=check_every_s)  # fmt: skip


def reference_follower(
    core: InspectorCore, registry: ArtifactRegistry, *, replica: str, check_every_s: float = CHECK_EVERY_S
) -> EventFollower:
    """A follower (not started) that swaps cameras' reference sets in ``core`` when the aliases they follow
    move (the reference registry's events), with the same re-check and refusal audit as prompts."""

    def check(camera: str | None) -> None:
        report_refusals(registry, core.refresh_references(camera), replica=replica)

    return EventFollower(registry.client, registry.events_channel, subject_of=_subject, check=check,
                         name="reference-follower", check_every_s=check_every_s)  # fmt: skip


def report_refusals(
    registry: ArtifactRegistry, swaps: list[Swap], *, replica: str, metrics: PipelineMetrics | None = None
) -> None:
    """Report refused swaps: a metric for prompts, and an audit entry next to the promotion (the log line is the
    core's)."""
    for swap in swaps:
        if swap.swapped:
            continue
        if metrics is not None and swap.kind == "prompts":
            metrics.prompt_load_failed(swap.subject, swap.error_reason)
        try:
            registry.record_serving_refusal(
                swap.subject, swap.follows, swap.old_version,
                actor=replica, cause=swap.error_reason, detail=swap.error_detail,
            )  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - the log line already says it
            log.warning("could not audit the refused %s load: %s", swap.kind, exc)


def _subject(event: dict[str, object]) -> str | None:
    """A registry event's subject (its ``method`` field: the method, or the camera of a reference set)."""
    subject = event.get("method")
    return subject if isinstance(subject, str) else None


class RegistryReferences:
    """A :class:`~services.frame_path.camera_method.ReferenceSource` over the reference registry: resolve, verify."""

    def __init__(self, registry: ArtifactRegistry) -> None:
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
