"""``zsad train``: zsad_core's plain prompt-training loop as a Ray Train job, with checkpoints and resume.

Why a wrapper and not a second loop: :class:`zsad_core.training.PromptTrainer` already holds everything a
checkpoint needs (method weights, optimiser, counters, data RNG), and :mod:`zsad_core.data_parallel` what
data-parallel ranks need around it. Each Ray Train worker runs that trainer on its own shard of the auxiliary data,
the workers' gradients are averaged before every optimiser step, and after every epoch rank 0 stores the trainer
state as a checkpoint (:mod:`.training_checkpoints`); Ray adds only the worker group, its placement and its
restarts. A failed worker group is
restarted by Ray (``FailureConfig``) and resumes from the latest checkpoint, and a re-run with the same name
resumes the same way. The driver then evaluates the final prompts on held-out data, writes an immutable artifact
and optionally registers it; :func:`run_training` returns all of that as a :class:`TrainOutcome` (``zsad train``
prints it).

Beyond one machine: the checkpoints live in the registry's kind of artifact store (``registry.root``: a directory,
``redis://`` or an object-store URL), so with ``redis://`` or a URL no node needs a shared disk (a directory must be
a volume every node mounts), and a worker that replaces one on a lost node resumes from what the lost one stored.
Ray Train itself only keeps its bookkeeping under ``storage_path`` on the driver's machine, because no checkpoint is
reported to it. Every node builds the training data from its spec: a ``synthetic:`` spec needs no file at all, a
dataset path must exist on every training node. ``one_per_node`` puts each worker on its own node,
``worker_resources`` on the nodes that have them.

Epoch callbacks (:data:`EpochCallback`, the ``epoch_callbacks`` of :func:`run_training`) run on every worker
after each epoch's checkpoint is stored: progress hooks, and fault injection. A callback that raises fails the
worker group exactly as a crashed worker does, so Ray restarts it from the latest checkpoint (up to
``max_failures``); that is how the recovery path is exercised. Callbacks travel to the workers pickled (Ray's
cloudpickle), so they must be picklable and importable there, or registered with
``ray.cloudpickle.register_pickle_by_value``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.config import RayResources, load_config
from services.prompt_lifecycle.training_checkpoints import CheckpointLocation, Progress, TrainingCheckpoint
from zsad_core.errors import ZsadError

if TYPE_CHECKING:
    import torch
    from ray.train import ScalingConfig

    from services.config import ZsadConfig
    from zsad_core.methods import ZeroShotMethod
    from zsad_core.metrics.evaluate import EvaluationReport
    from zsad_core.training import PromptTrainer

# Workers log with `logging`: Ray Train patches `print` in its workers to log *and* print, showing each line twice.
logger = logging.getLogger(__name__)

# Spec fields that do not change what is trained: a run named after the spec ignores them, so re-running the same
# training with another held-out set, with registration on or on other nodes resumes the same run.
_NOT_TRAINING_FIELDS = frozenset(
    {"name", "storage_path", "register_artifact", "max_failures", "baseline", "eval_data", "use_gpu",
     "one_per_node", "worker_resources"}
)  # fmt: skip

PositiveInt = Annotated[int, Field(gt=0)]


class TrainJobError(ZsadError):
    """A training job cannot be started or did not produce a result; the message says which and why."""

    reason = "train_job"


class TrainJobSpec(BaseModel):
    """What to train, on what, how, and where the run lives.

    Attributes:
        method: a learnable method (``vcp-clip``, ``vip2-clip``, ``clip-ad+``).
        backbone: ``arch[:tag]`` instead of the method's official backbone.
        backbone_weights: a local CLIP weight file.
        pretrained: False builds random CLIP weights (offline smoke runs); the driver rebuilds the same random
            backbone from ``seed`` to evaluate, so the held-out numbers belong to the trained backbone.
        image_size: model input size instead of the method's official one.
        train_data: class-agnostic auxiliary data with masks, a :func:`zsad_core.data.build_dataset` spec.
        eval_data: held-out data (another domain) evaluated after training.
        epochs, lr, batch_size, seed: None means the method's official value; ``lr`` is the config's main ``lr``
            (the methods' secondary rates, e.g. VCP-CLIP's temperatures, keep theirs); ``batch_size`` is per worker.
        workers: Ray Train workers; each trains on a rank-strided shard and gradients are averaged.
        use_gpu: one GPU per worker.
        one_per_node: every worker on a node of its own (Ray's ``STRICT_SPREAD``): a run waits until that many
            nodes can take one, and a node's failure costs one worker, never two.
        worker_resources: custom Ray resources each worker needs (``{"train": 1}``): workers run only on nodes
            started with them, e.g. the training nodes of a cluster shared with serving.
        storage_path: the driver's directory for the run: Ray Train's bookkeeping and the written artifact.
        name: the run's name; a re-run with the same name resumes from its latest checkpoint.
            None derives a stable name from the training fields (method, data, hyper-parameters, workers).
        register_artifact: register the artifact in the prompt registry and point alias ``candidate`` at it.
        max_failures: worker-group failures Ray Train recovers from (from the latest checkpoint).
        baseline: also evaluate the untrained prompts on the held-out data (costs one more evaluation).
    """

    model_config = ConfigDict(extra="forbid")

    method: str = Field(min_length=1)
    backbone: str | None = None
    backbone_weights: str | None = None
    pretrained: bool = True
    image_size: PositiveInt | None = None
    train_data: str = Field(min_length=1)
    eval_data: str = Field(min_length=1)
    epochs: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    batch_size: PositiveInt | None = None
    workers: PositiveInt = 1
    use_gpu: bool = False
    one_per_node: bool = False
    worker_resources: RayResources = Field(default_factory=dict)
    seed: Annotated[int, Field(ge=0)] | None = None
    storage_path: Path = Path("runs/train")
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")
    register_artifact: bool = False
    max_failures: Annotated[int, Field(ge=-1)] = 2
    baseline: bool = True

    @property
    def run_name(self) -> str:
        """``name``, or ``<method>-<hash of the training fields>``."""
        if self.name:
            return self.name
        fields = self.model_dump(mode="json", exclude=set(_NOT_TRAINING_FIELDS))
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]
        return f"{self.method}-{digest}"

    @property
    def run_dir(self) -> Path:
        """The run's directory on the driver's machine (absolute, as Ray Train requires)."""
        return self.storage_path.expanduser().resolve() / self.run_name


def spec_from_fields(**fields: Any) -> TrainJobSpec:
    """A validated spec, with validation errors as one :class:`TrainJobError` naming every faulty field."""
    try:
        return TrainJobSpec(**fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        raise TrainJobError(f"invalid training job: {problems}") from None


@dataclass(frozen=True)
class TrainOutcome:
    """The result of :func:`run_training`: what was trained, where it went, how it scored.

    Attributes:
        method: the method whose prompts were trained.
        run_name: the Ray Train run.
        artifact_dir: the new prompt artifact.
        metrics: held-out mean metrics of the trained prompts (``dataset`` names the data).
        held_out: the trained prompts' held-out report, per class and mean.
        baseline_metrics: the same as ``metrics`` for the untrained prompts, when ``spec.baseline``.
        registry_version: the registered version (alias ``candidate`` points at it), when
            ``spec.register_artifact``.
        checkpoint_location: the checkpoint the artifact was made from, in the checkpoint store.
        epochs_done: epochs trained in total, across attempts and re-runs.
        history: one ``{"epoch", "loss", "steps"}`` per epoch (loss averaged over workers).
        attempt_starts: the epoch at which each attempt started (``[0, 1]``: resumed after epoch 1).
    """

    method: str
    run_name: str
    artifact_dir: Path
    metrics: dict[str, Any]
    held_out: EvaluationReport
    baseline_metrics: dict[str, Any] | None
    registry_version: str | None
    checkpoint_location: str
    epochs_done: int
    history: list[dict[str, float]]
    attempt_starts: list[int]


def _method_seed(spec: TrainJobSpec) -> int:
    from zsad_core.methods.registry import get_method_config

    return spec.seed if spec.seed is not None else int(get_method_config(spec.method).seed)


def _epochs(spec: TrainJobSpec) -> int:
    from zsad_core.methods.registry import get_method_config

    return spec.epochs if spec.epochs is not None else int(get_method_config(spec.method).epochs)


def build_method(spec: TrainJobSpec, device: str | torch.device = "cpu") -> ZeroShotMethod:
    """The method of ``spec`` with untrained prompts, built after seeding with the run's seed.

    Why seeded here: every worker and the driver must hold the same backbone and the same initial prompts. With
    ``pretrained=False`` the backbone itself is random, and the driver's evaluation is only meaningful on the
    backbone the prompts were trained against.
    """
    import torch

    from zsad_core import load_method

    overrides: dict[str, Any] = {}
    if spec.image_size is not None:
        overrides["image_size"] = spec.image_size
    if spec.lr is not None:
        overrides["lr"] = spec.lr
    with torch.random.fork_rng(devices=[]):  # seeded for this build only: the caller's RNG is left as it was
        torch.manual_seed(_method_seed(spec))
        return load_method(spec.method, backbone=spec.backbone, pretrained=spec.pretrained,
                           backbone_weights=spec.backbone_weights, device=str(device), **overrides)


def _restore(trainer: PromptTrainer, checkpoint: TrainingCheckpoint, rank: int) -> Progress:
    """Load rank 0's trainer state and this rank's own data RNG (a rank new to the run keeps its fresh RNG)."""
    rngs = checkpoint.data_rngs
    own_rng = rngs[rank] if rank < len(rngs) else trainer.state_dict()["rng"]
    trainer.load_state_dict({**checkpoint.state, "rng": own_rng})
    return checkpoint.progress


@dataclass(frozen=True)
class EpochEnd:
    """What an epoch callback learns about the epoch a worker just reported (checkpoint included).

    Attributes:
        epoch: the epoch just finished (1-based).
        rank, world_size: this worker and the size of its group.
        run_name: the run.
        attempt_start: the epoch this attempt of the run started from (0 for a fresh start; a failed attempt's
            successor starts from the latest checkpoint).
        log: the epoch's log as reported (``epoch``, ``steps``, ``loss``).
    """

    epoch: int
    rank: int
    world_size: int
    run_name: str
    attempt_start: int
    log: dict[str, Any]


EpochCallback = Callable[[EpochEnd], None]


def _train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: resume from the latest checkpoint, train this rank's shard, store every epoch."""
    import contextlib

    import ray.train
    import ray.train.torch

    from zsad_core.data import build_dataset
    from zsad_core.data_parallel import (
        DatasetShard,
        average_gradients,
        check_in_sync,
        from_rank_zero,
        gather_from_ranks,
        mean_over_ranks,
    )
    from zsad_core.training import PromptTrainer, TrainingOptions

    spec = TrainJobSpec.model_validate(config["spec"])
    checkpoints: CheckpointLocation = config["checkpoints"]
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    method = build_method(spec, device)
    shard = DatasetShard(build_dataset(spec.train_data), rank, world_size)
    # Each rank draws its own augmentation and data order; the weights start equal (built before this seed).
    options = TrainingOptions(epochs=spec.epochs, batch_size=spec.batch_size, seed=_method_seed(spec) + rank)
    trainer = PromptTrainer(method, shard, options)
    if world_size > 1:
        average_gradients(trainer.optimizer, world_size)
    # Rank 0 alone reads and writes the store: the ranks cannot disagree on where they resume.
    with checkpoints.open() if rank == 0 else contextlib.nullcontext() as store:
        latest = from_rank_zero(store.latest(trainer.epochs) if store else None, world_size)
        progress = _restore(trainer, latest, rank) if latest is not None else Progress()
        attempt_start = trainer.epoch
        progress.starts.append(attempt_start)
        if rank == 0 and attempt_start:
            logger.info("resumed from the checkpoint of epoch %d (%s)", attempt_start, latest.location)
        while trainer.epoch < trainer.epochs:
            log = trainer.train_epoch()
            if world_size > 1:
                log["loss"] = mean_over_ranks(log["loss"], device)
                check_in_sync(method.trainable_parameters(), device)
            progress.history.append(log)
            data_rngs = gather_from_ranks(trainer.state_dict()["rng"], world_size)
            if store is not None:
                location = store.save(trainer.state_dict(), progress, data_rngs)
                logger.info("epoch %d/%d: loss %.4f, checkpoint %s", log["epoch"], trainer.epochs, log["loss"],
                            location)  # fmt: skip
            # After the save: report waits for every rank, so an epoch reported is an epoch stored.
            ray.train.report(log)
            finished = EpochEnd(trainer.epoch, rank, world_size, spec.run_name, attempt_start, dict(log))
            for callback in config["epoch_callbacks"]:
                callback(finished)


def check_spec(spec: TrainJobSpec) -> None:
    """Fail before Ray starts anything: unknown or training-free method, bad override, weights that would be
    random without being asked for, unreadable data spec."""
    from zsad_core.data import build_dataset
    from zsad_core.methods.registry import get_method_config, get_method_spec, method_backbone_config

    try:
        if not get_method_spec(spec.method).method_cls.learnable:
            raise TrainJobError(f"{spec.method} has no learnable prompts; train vcp-clip, vip2-clip or clip-ad+")
        config = get_method_config(spec.method, **({"lr": spec.lr} if spec.lr is not None else {}))
    except (KeyError, TypeError) as exc:
        raise TrainJobError(str(exc)) from None
    method_backbone_config(config, spec.backbone, pretrained=spec.pretrained, weights=spec.backbone_weights)
    build_dataset(spec.train_data)
    build_dataset(spec.eval_data)


def scaling_config(spec: TrainJobSpec) -> ScalingConfig:
    """Ray Train's worker count and placement for ``spec``: ``one_per_node`` is a ``STRICT_SPREAD`` placement
    group (one worker per node), ``worker_resources`` are added to each worker's resources."""
    from ray.train import ScalingConfig

    resources = None
    if spec.worker_resources:  # Ray then reserves only what is listed: keep its default CPU (or GPU) per worker
        resources = {**({} if spec.use_gpu else {"CPU": 1}), **spec.worker_resources}
    return ScalingConfig(num_workers=spec.workers, use_gpu=spec.use_gpu, resources_per_worker=resources,
                         placement_strategy="STRICT_SPREAD" if spec.one_per_node else "PACK")  # fmt: skip


def _fit(spec: TrainJobSpec, checkpoints: CheckpointLocation, epoch_callbacks: Sequence[EpochCallback]) -> None:
    """Run the Ray Train job to its end (the caller owns the Ray connection)."""
    from ray.train import FailureConfig, RunConfig, TrainingFailedError
    from ray.train.torch import TorchTrainer

    run_dir = spec.run_dir
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config={"spec": spec.model_dump(mode="json"), "checkpoints": checkpoints,
                           "epoch_callbacks": list(epoch_callbacks)},
        scaling_config=scaling_config(spec),
        run_config=RunConfig(name=spec.run_name, storage_path=str(run_dir.parent),
                             failure_config=FailureConfig(max_failures=spec.max_failures)),
    )
    try:
        trainer.fit()
    except TrainingFailedError as exc:
        raise TrainJobError(f"ray train run {spec.run_name} failed: {exc}") from exc


def _evaluate(method: ZeroShotMethod, spec: TrainJobSpec) -> tuple[dict[str, Any], EvaluationReport]:
    """Held-out mean metrics (with the data spec under ``dataset``, as the registry expects) and the report."""
    from zsad_core.data import build_dataset
    from zsad_core.evaluation import evaluate_method

    report = evaluate_method(method, build_dataset(spec.eval_data)).report
    return {"dataset": spec.eval_data, **report.to_dict()["mean"]}, report


def _register(spec: TrainJobSpec, artifact: Path, config: ZsadConfig, metrics: dict[str, Any]) -> str:
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.result_store import connect

    actor = f"zsad-train:{spec.run_name}"
    client = connect(config.redis)
    try:
        registry = ArtifactRegistry.from_config(config.registry, client)
        entry = registry.register(artifact, training_data=spec.train_data, created_by=actor)
        registry.promote(spec.method, entry.version, alias="candidate", actor=actor,
                         reason=f"trained by ray run {spec.run_name}; held-out pixel AUROC {metrics['pixel_auroc']}")
    finally:
        client.close()
    return entry.version


def run_training(
    spec: TrainJobSpec, config: ZsadConfig | None = None, *, epoch_callbacks: Sequence[EpochCallback] = ()
) -> TrainOutcome:
    """Train ``spec`` with Ray Train, evaluate on the held-out data, save (and optionally register) the artifact;
    returns what was done (the caller reports it).

    Ray must be initialised by the caller (``zsad train`` does it); a run whose checkpoints are already in the
    checkpoint store is resumed, not restarted.

    Args:
        spec: the job.
        config: the system configuration (None: the embedded defaults); its ``registry`` section says where the
            checkpoints go (beside the prompts) and, with ``spec.register_artifact``, where the artifact is
            registered; its ``redis`` section reaches a ``redis://`` store and the registry.
        epoch_callbacks: called on every worker after each reported epoch (see the module docstring).

    Raises:
        TrainJobError: bad spec, or the run failed more than ``spec.max_failures`` times.
    """
    import torch

    from zsad_core.artifacts import save_prompts

    check_spec(spec)
    config = config or load_config(None)
    checkpoints = CheckpointLocation.from_config(config, spec.run_name)
    _fit(spec, checkpoints, epoch_callbacks)
    with checkpoints.open() as store:
        final = store.latest(_epochs(spec))
    if final is None:
        raise TrainJobError(f"ray train run {spec.run_name} stored no checkpoint in {checkpoints.root}")
    state, progress = final.state, final.progress
    method = build_method(spec, "cuda" if spec.use_gpu and torch.cuda.is_available() else "cpu")
    baseline = _evaluate(method, spec)[0] if spec.baseline else None
    method.load_state_dict(state["method"])
    metrics, held_out = _evaluate(method, spec)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    extra = {"training_data": spec.train_data, "metrics": metrics, "baseline_metrics": baseline,
             "ray_run_name": spec.run_name, "history": progress.history, "workers": spec.workers}
    artifact = save_prompts(method, spec.run_dir / "artifacts" / stamp, extra)
    version = _register(spec, artifact, config, metrics) if spec.register_artifact else None
    return TrainOutcome(
        method=spec.method,
        run_name=spec.run_name,
        artifact_dir=artifact,
        metrics=metrics,
        held_out=held_out,
        baseline_metrics=baseline,
        registry_version=version,
        checkpoint_location=final.location,
        epochs_done=int(state["epoch"]),
        history=progress.history,
        attempt_starts=progress.starts,
    )
