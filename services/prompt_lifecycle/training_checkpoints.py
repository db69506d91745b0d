"""Per-epoch checkpoints of a training run in the registry's kind of artifact store, so no node needs a shared disk.

Why not Ray Train's own checkpoints: Ray Train uploads a reported checkpoint from each worker into its
``storage_path``, so on a cluster of several machines that path must be a file system every node mounts (or an
object store Ray Train is configured for). The prompt registry already has stores that every node reaches without
one: ``redis://`` and object-store URLs (:mod:`services.stores.artifact_store`). A training checkpoint is small (the
prompt weights and their optimiser state), so it goes to the same kind of store, beside the prompts
(:func:`~services.stores.artifact_store.store_root_beside` with ``checkpoints``; namespace
``<registry.namespace>:checkpoints`` for ``redis://``), keyed by run name and epoch: ``<run>/epoch-<N>``. A worker
on any node can then save one, and a worker started on a new node after a failure can restore it.

A checkpoint is three files written by rank 0 in one :meth:`~services.stores.artifact_store.ArtifactStore.put`
(write-once, like every version in a store):

* ``trainer_state.pt``: :meth:`zsad_core.training.PromptTrainer.state_dict` of rank 0 (tensors, numbers and strings
  only: it is read back with ``torch.load(weights_only=True)``, so no arbitrary object is ever unpickled);
* ``progress.json``: the epoch log and the epoch at which each attempt started (the proof of a resume);
* ``data_rng.json``: every rank's data-order RNG, by rank, so a resumed shard continues its own random stream.

Epochs are written in order and never twice, so the latest checkpoint is the highest epoch, looked up from the
run's last epoch downwards. A checkpoint whose files are not all there (an object-store write cut short) is no
checkpoint: it is skipped and removed, so that epoch can be written again.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.stores.artifact_store import (
    ArtifactStore,
    MissingArtifactFileError,
    open_artifact_store,
    store_root_beside,
)

if TYPE_CHECKING:
    from services.config import RedisConfig, ZsadConfig

STATE_FILE = "trainer_state.pt"
PROGRESS_FILE = "progress.json"
RNG_FILE = "data_rng.json"
CHECKPOINT_FILES = (STATE_FILE, PROGRESS_FILE, RNG_FILE)


@dataclass
class Progress:
    """What the checkpoints record about the run itself: the epoch log and where each attempt started.

    ``starts`` is ``[0]`` for an uninterrupted run and e.g. ``[0, 1]`` when a failure after epoch 1 was
    recovered from the epoch-1 checkpoint; epochs are never repeated in ``history``.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class TrainingCheckpoint:
    """One stored epoch of a run.

    Attributes:
        epoch: epochs trained when it was written.
        state: rank 0's trainer state (:meth:`PromptTrainer.state_dict`, its data RNG included).
        progress: the run's log up to this epoch.
        data_rngs: each rank's data RNG state, indexed by rank.
        location: where it is in the store.
    """

    epoch: int
    state: dict[str, Any]
    progress: Progress
    data_rngs: list[dict[str, Any]]
    location: str


def _version(epoch: int) -> str:
    return f"epoch-{epoch}"


class CheckpointStore:
    """The checkpoints of run ``run_name`` in ``store``."""

    def __init__(self, store: ArtifactStore, run_name: str) -> None:
        self.store = store
        self.run_name = run_name

    def save(self, state: dict[str, Any], progress: Progress, data_rngs: list[dict[str, Any]]) -> str:
        """Store the checkpoint of epoch ``state["epoch"]``; returns its location.

        Raises:
            ArtifactStoreError: that epoch is already stored (another run with the same name is writing it), or
                the checkpoint is larger than a ``redis://`` store accepts.
        """
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        files = {
            STATE_FILE: buffer.getvalue(),
            PROGRESS_FILE: json.dumps(asdict(progress)).encode(),
            RNG_FILE: json.dumps(data_rngs).encode(),
        }
        return self.store.put(self.run_name, _version(int(state["epoch"])), files)

    def latest(self, last_epoch: int) -> TrainingCheckpoint | None:
        """The complete checkpoint of the highest epoch up to ``last_epoch``, or None if the run has none.

        ``last_epoch`` is the run's final epoch: a re-run asked for fewer epochs than were stored ends at its own.
        """
        import torch

        for epoch in range(last_epoch, 0, -1):
            location = self.store.location(self.run_name, _version(epoch))
            try:
                files = self.store.read(location, CHECKPOINT_FILES)
            except MissingArtifactFileError:
                if self.store.taken(self.run_name, _version(epoch)):
                    self.store.discard(location)  # a write cut short: never read, and in the way of a new one
                continue
            state = torch.load(io.BytesIO(files[STATE_FILE]), map_location="cpu", weights_only=True)
            return TrainingCheckpoint(
                epoch=epoch,
                state=state,
                progress=Progress(**json.loads(files[PROGRESS_FILE])),
                data_rngs=json.loads(files[RNG_FILE]),
                location=location,
            )
        return None


@dataclass(frozen=True)
class CheckpointLocation:
    """Where the checkpoints of one run live: everything a worker on any node needs to open them.

    Built on the driver from the configuration and sent to the workers with the job (the Redis password with it,
    as the Serve deployments get theirs). A directory root is made absolute here, because workers do not share
    the driver's working directory; on several machines it must be a volume every node mounts.
    """

    run_name: str
    root: str
    namespace: str
    max_redis_bytes: int
    redis: RedisConfig

    @classmethod
    def from_config(cls, config: ZsadConfig, run_name: str) -> CheckpointLocation:
        """The checkpoints of ``run_name`` beside the prompt registry that ``config.registry`` describes."""
        root = store_root_beside(config.registry.root, "checkpoints")
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        return cls(
            run_name=run_name,
            root=root,
            namespace=f"{config.registry.namespace}:checkpoints",
            max_redis_bytes=config.registry.max_redis_bytes,
            redis=config.redis,
        )

    @contextmanager
    def open(self) -> Iterator[CheckpointStore]:
        """The run's :class:`CheckpointStore`; its Redis connection (only made for ``redis://``) closes after."""
        from services.stores.result_store import connect

        client = connect(self.redis)
        try:
            store = open_artifact_store(self.root, client, self.namespace, max_redis_bytes=self.max_redis_bytes)
            yield CheckpointStore(store, self.run_name)
        finally:
            client.close()
