"""``zsad train``: retrain a method's prompts as a Ray Train job (see :mod:`services.prompt_lifecycle.training_job`).

``train-local`` trains in the CLI's own process; ``train`` runs the same loop on Ray Train workers, with a
checkpoint per epoch in the registry's kind of store, recovery from worker failures, held-out evaluation and
optional registration.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from services.arg_types import non_negative_int, positive_float, positive_int
from services.cli.options import (
    add_address_option,
    add_backbone_options,
    add_config_option,
    add_training_options,
    announce_random_weights,
    config_from_args,
)
from services.config import ray_resource

if TYPE_CHECKING:
    from services.prompt_lifecycle.training_job import TrainOutcome


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad train``."""
    train = commands.add_parser("train", help="train a learnable method's prompts with Ray Train")
    add_backbone_options(train, default_method="vcp-clip")
    add_training_options(train, eval_required=True)
    train.add_argument("--workers", type=positive_int, default=1, help="Ray Train workers (data-parallel)")
    train.add_argument("--gpu", action="store_true", help="one GPU per worker")
    train.add_argument("--one-per-node", action="store_true",
                       help="every worker on a node of its own (waits until that many nodes can take one)")
    train.add_argument("--worker-resource", type=ray_resource, action="append", default=[], metavar="NAME=AMOUNT",
                       help="a custom Ray resource each worker needs, so workers run only on the nodes that have "
                            "it (repeatable)")
    train.add_argument("--lr", type=positive_float, help="the method's main learning rate instead of the official one")
    train.add_argument("--name", help="run name; re-running with the same name resumes it (default: derived from "
                                      "the training options)")
    train.add_argument("--storage", default="runs/train",
                       help="the driver's directory for Ray Train's bookkeeping and the artifact; checkpoints go "
                            "beside the registry's artifacts (registry.root of --config)")
    train.add_argument("--max-failures", type=non_negative_int, default=2, help="worker failures to recover from")
    train.add_argument("--no-baseline", action="store_true", help="skip evaluating the untrained prompts")
    train.add_argument("--register", action="store_true",
                       help="register the artifact in the prompt registry and point alias candidate at it")
    add_address_option(train, "a running Ray cluster (e.g. 127.0.0.1:6379, auto); default: start a local one")
    add_config_option(train)
    train.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Validate the job, connect to (or start) Ray, run it, print what it trained and where the artifact went."""
    import ray

    from services.prompt_lifecycle.training_job import check_spec, run_training, spec_from_fields

    announce_random_weights(args)
    spec = spec_from_fields(
        method=args.method, backbone=args.backbone, backbone_weights=args.backbone_weights,
        pretrained=not args.random_weights, image_size=args.image_size, train_data=args.train_data,
        eval_data=args.eval_data, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, workers=args.workers,
        use_gpu=args.gpu, one_per_node=args.one_per_node, worker_resources=dict(args.worker_resource),
        seed=args.seed, storage_path=args.storage, name=args.name, register_artifact=args.register,
        max_failures=args.max_failures, baseline=not args.no_baseline,
    )  # fmt: skip
    check_spec(spec)  # before Ray starts: a typo should cost a second, not a cluster start
    config = config_from_args(args)
    # A process that already holds a Ray connection (a notebook, a test) keeps it; otherwise this command owns one.
    owned = not ray.is_initialized()
    if owned:
        ray.init(address=args.address or "local")
    try:
        outcome = run_training(spec, config)
    finally:
        if owned:
            ray.shutdown()
    print(format_outcome(outcome))
    return 0


def format_outcome(outcome: TrainOutcome) -> str:
    """The run (epochs, attempts, checkpoint), the held-out table and gain, the artifact and its registration."""
    lines = [
        f"run {outcome.run_name}: {outcome.epochs_done} epochs; attempts started at epochs {outcome.attempt_starts}; "
        f"checkpoint {outcome.checkpoint_location}",
        f"held-out {outcome.metrics['dataset']}:\n{outcome.held_out.format_table()}",
    ]
    if outcome.baseline_metrics is not None:
        lines.append(f"held-out pixel AUROC: untrained {_percent(outcome.baseline_metrics, 'pixel_auroc')} -> "
                     f"trained {_percent(outcome.metrics, 'pixel_auroc')}")  # fmt: skip
    lines.append(f"artifact written to {outcome.artifact_dir}")
    if outcome.registry_version is not None:
        version = outcome.registry_version
        lines.append(f"registered {outcome.method} {version}; alias candidate -> {version}")
    lines.append(f"run {outcome.run_name}: held-out pixel AUROC {outcome.metrics['pixel_auroc']}")
    return "\n".join(lines)


def _percent(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    return "-" if value is None else f"{100 * value:.1f}"
