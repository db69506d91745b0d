"""What ``zsad train`` prints of a finished run: the run, the held-out table and gain, the artifact, the version."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from services.cli.cmd_train import format_outcome
from services.prompt_lifecycle.training_job import TrainOutcome


def outcome(**fields: object) -> TrainOutcome:
    defaults = {
        "method": "vcp-clip", "run_name": "nightly", "artifact_dir": Path("/runs/nightly/artifacts/1"),
        "metrics": {"dataset": "visa:/data/visa", "pixel_auroc": 0.9123}, "baseline_metrics": None,
        "held_out": SimpleNamespace(format_table=lambda: "class  pixel_auroc\nmean   91.2"),
        "registry_version": None, "checkpoint_location": "/registry/checkpoints/nightly/epoch-4", "epochs_done": 4,
        "history": [], "attempt_starts": [0, 3],
    }  # fmt: skip
    return TrainOutcome(**{**defaults, **fields})  # type: ignore[arg-type]


def test_a_run_prints_its_epochs_table_and_artifact() -> None:
    assert format_outcome(outcome()).splitlines() == [
        "run nightly: 4 epochs; attempts started at epochs [0, 3]; checkpoint /registry/checkpoints/nightly/epoch-4",
        "held-out visa:/data/visa:",
        "class  pixel_auroc",
        "mean   91.2",
        "artifact written to /runs/nightly/artifacts/1",
        "run nightly: held-out pixel AUROC 0.9123",
    ]


def test_a_baseline_and_a_registration_add_their_lines() -> None:
    lines = format_outcome(outcome(baseline_metrics={"pixel_auroc": 0.5}, registry_version="v7")).splitlines()
    assert "held-out pixel AUROC: untrained 50.0 -> trained 91.2" in lines
    assert lines[-2:] == ["registered vcp-clip v7; alias candidate -> v7", "run nightly: held-out pixel AUROC 0.9123"]
