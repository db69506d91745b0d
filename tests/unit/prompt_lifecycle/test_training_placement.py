"""Where ``zsad train`` puts its workers: the options, their validation and the Ray Train scaling they become.

tests/integration/multinode/test_training_multinode.py shows the placement on real raylets.
"""

from __future__ import annotations

import pytest

from services.cli.main import build_parser
from services.prompt_lifecycle.training_job import TrainJobError, scaling_config, spec_from_fields
from services.stores.schedules import ScheduleError, check_command

FIELDS = {"method": "vcp-clip", "train_data": "synthetic:classes=1", "eval_data": "synthetic:classes=1"}


def parse_train(*options: str) -> dict[str, object]:
    args = build_parser().parse_args(["train", "--train-data", "synthetic:", "--eval-data", "synthetic:", *options])
    return {"one_per_node": args.one_per_node, "worker_resources": dict(args.worker_resource)}


def test_cli_options_become_the_spec_fields() -> None:
    assert parse_train() == {"one_per_node": False, "worker_resources": {}}
    parsed = parse_train("--one-per-node", "--worker-resource", "trainer=1", "--worker-resource", "ssd=0.5")
    assert parsed == {"one_per_node": True, "worker_resources": {"trainer": 1.0, "ssd": 0.5}}


@pytest.mark.parametrize("text", ["trainer", "trainer=one"])
def test_a_resource_without_an_amount_is_refused_by_the_parser(text: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        parse_train("--worker-resource", text)
    assert "argument --worker-resource: invalid ray_resource value" in capsys.readouterr().err


def test_a_schedule_may_run_a_placed_training() -> None:
    train = ["train", "--train-data", "synthetic:", "--eval-data", "synthetic:"]
    placed = [*train, "--workers", "2", "--one-per-node", "--worker-resource", "trainer=1"]
    assert check_command(placed)[: len(placed)] == placed
    with pytest.raises(ScheduleError, match="--worker-resource: invalid ray_resource value: 'trainer'"):
        check_command([*train, "--worker-resource", "trainer"])


@pytest.mark.parametrize("resources", [{"trainer": 0}, {"trainer": -1}, {"": 1}])
def test_resources_must_be_named_and_positive(resources: dict[str, float]) -> None:
    with pytest.raises(TrainJobError, match="worker_resources"):
        spec_from_fields(**FIELDS, worker_resources=resources)


def test_default_placement_is_rays() -> None:
    scaling = scaling_config(spec_from_fields(**FIELDS, workers=2))
    assert (scaling.num_workers, scaling.placement_strategy, scaling.resources_per_worker) == (2, "PACK", None)


def test_one_per_node_spreads_strictly_and_resources_keep_the_default_cpu_or_gpu() -> None:
    spec = spec_from_fields(**FIELDS, workers=2, one_per_node=True, worker_resources={"trainer": 1})
    scaling = scaling_config(spec)
    assert scaling.placement_strategy == "STRICT_SPREAD"
    assert scaling.resources_per_worker == {"CPU": 1, "trainer": 1}  # as much CPU as without the resource
    on_gpus = scaling_config(spec.model_copy(update={"use_gpu": True}))
    assert on_gpus.use_gpu and on_gpus.resources_per_worker == {"trainer": 1}  # use_gpu adds its GPU


def test_placement_does_not_rename_the_run() -> None:
    """Re-running the same training on other nodes resumes it: placement is not a training field."""
    plain = spec_from_fields(**FIELDS)
    placed = spec_from_fields(**FIELDS, one_per_node=True, worker_resources={"trainer": 1})
    assert plain.run_name == placed.run_name
