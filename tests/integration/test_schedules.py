"""``zsad schedule`` on a real local Ray with the dashboard (the Jobs API needs it) and a real Redis.

The checks of names, cron expressions and commands need neither. The scheduler actor's ``tick(now)`` is called with
chosen times to test due times, missed runs and duplicates without waiting for the clock, on runs of the instant
``zsad version``; one test goes through the actor's own loop with a one-minute cron expression and a tiny
``zsad train --register`` (the settings of test_ray_train_job.py). That schedule is stored as created two minutes
ago and never run, so by the missed-run rule its latest scheduled minute is already due: the loop submits it at its
next tick instead of at the next minute boundary (up to 60 s of waiting).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli.main import main
from services.config import ZsadConfig, load_config
from services.local_stack.service_processes import RedisServer
from services.stores.artifact_registry import ArtifactRegistry
from services.stores.result_store import connect
from services.stores.schedules import (
    HEARTBEAT_KEY,
    LAST_RUN_KEY,
    SCHEDULES_KEY,
    LastRun,
    Schedule,
    ScheduleError,
    ScheduleStore,
    check_command,
    check_cron,
    entrypoint,
    latest_due,
    submission_id,
    utc_now,
)

pytestmark = [
    pytest.mark.integration, pytest.mark.slow,
    pytest.mark.queue_early(reason="a Ray of its own with the dashboard, then a training run through the Jobs API"),
]

TRAIN_DATA = "synthetic:classes=woven+wood,per_class=6,size=64"
EVAL_DATA = "synthetic:seed=7,classes=stone+disc,per_class=4,size=64"
UTC = dt.UTC


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# ---- checks that need neither Ray nor Redis -------------------------------------------------------------------------


def test_a_bad_cron_expression_is_refused_with_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_cron(" 0  3 * * * ") == "0 3 * * *" and check_cron("@daily") == "@daily"
    with pytest.raises(ScheduleError, match=r"bad cron expression '61 \* \* \* \*': .*out of range"):
        check_cron("61 * * * *")
    with pytest.raises(ScheduleError, match="give five fields"):
        check_cron("*/10 * * * * *")  # a seconds field: two runs of one minute would share a name
    with pytest.raises(ScheduleError, match="give five fields"):
        check_cron("every night")

    assert main(["schedule", "add", "nightly", "--cron", "0 25 * * *", "--", "version"]) == 2
    assert "zsad: error (schedule): bad cron expression '0 25 * * *'" in capsys.readouterr().err


def test_only_zsad_sub_commands_are_accepted_as_entrypoints(capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["bash", "-c", "id"], ["python", "-c", "print(1)"], ["train; id"], [], ["--help"],
                    ["train", "--help"], ["train", "--method", "vcp-clip"]):  # fmt: skip
        with pytest.raises(ScheduleError):
            check_command(command)
    assert main(["schedule", "add", "evil", "--cron", "* * * * *", "--", "bash", "-c", "id"]) == 2
    assert "not a valid zsad command: zsad bash -c id: " in capsys.readouterr().err

    # A run of `zsad train` uses the cluster it runs on instead of starting one of its own.
    command = check_command(["train", "--train-data", TRAIN_DATA, "--eval-data", EVAL_DATA, "--name", "x; id"])
    assert command[-2:] == ["--address", "auto"]
    assert check_command(["version"]) == ["version"]
    # Every word is quoted: shell metacharacters in an argument stay inside that argument.
    line = entrypoint(command, sys.executable)
    assert shlex.split(line) == [sys.executable, "-m", "services.cli.main", *command]


def test_submission_ids_are_stable_for_a_scheduled_time_and_only_the_latest_missed_run_is_due() -> None:
    at_three = dt.datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    assert submission_id("nightly", at_three) == "zsad-nightly-20261124T0300"
    same_instant = at_three.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert submission_id("nightly", same_instant) == submission_id("nightly", at_three)

    created = dt.datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
    assert latest_due("0 3 * * *", at_three, created) == at_three  # a time that matches exactly is due
    assert latest_due("0 3 * * *", at_three + dt.timedelta(seconds=30), created) == at_three
    assert latest_due("0 3 * * *", at_three + dt.timedelta(hours=1), after=at_three) is None  # already run
    assert latest_due("0 3 * * *", dt.datetime(2026, 11, 20, 12, 30, tzinfo=UTC), created) is None  # before creation
    # Down from the 21st to the 24th: only the latest missed time (the 24th's) is due, not three runs.
    assert latest_due("0 3 * * *", at_three + dt.timedelta(hours=5), created) == at_three


# ---- on a local Ray with the dashboard -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard(dashboard_ray: str) -> str:
    """The Jobs API's address: the dashboard of the module's own Ray (the session's has none)."""
    return dashboard_ray


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Path:
    root = tmp_path_factory.mktemp("schedules")
    path = root / "zsad.yaml"
    path.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {"cam1": {"method": "vcp-clip", "class_name": "bottle", "threshold": 0.5}},
        "registry": {"root": str(root / "registry"), "namespace": "test:schedules:registry"},
    }))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def config(config_path: Path) -> ZsadConfig:
    return load_config(config_path)


@pytest.fixture(scope="module")
def store(config: ZsadConfig) -> Iterator[ScheduleStore]:
    with connect(config.redis) as client:
        yield ScheduleStore(client)
        client.delete(SCHEDULES_KEY, LAST_RUN_KEY, HEARTBEAT_KEY)


@pytest.fixture(scope="module")
def scheduler(dashboard: str, config: ZsadConfig, store: ScheduleStore) -> Iterator[Any]:
    """The cluster's scheduler actor, ticking every 2 s; killed at the end (it is detached)."""
    import ray

    from services.prompt_lifecycle.scheduler_actor import ensure_scheduler

    actor = ensure_scheduler(config.redis, interval_s=2.0)
    yield actor
    ray.kill(actor, no_restart=True)


@pytest.fixture(scope="module")
def jobs(dashboard: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(dashboard)


def job_ids(jobs: Any, prefix: str) -> list[str]:
    return sorted(job.submission_id for job in jobs.list_jobs() if (job.submission_id or "").startswith(prefix))


def wait_for_job(jobs: Any, job_id: str, timeout_s: float) -> None:
    wait_for(lambda: jobs.get_job_status(job_id).is_terminal(), timeout_s, f"job {job_id} to finish", step_s=0.5)
    status = jobs.get_job_status(job_id)
    assert str(status) == "SUCCEEDED", f"job {job_id} {status}:\n{jobs.get_job_logs(job_id)[-4000:]}"


def _pid(actor: Any) -> int | None:
    """The actor's process id, or None while it is restarting."""
    import ray

    try:
        return ray.get(actor.describe.remote(), timeout=5)["pid"]
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def test_tick_submits_a_due_run_once_across_repeats_restarts_and_lost_records(
    scheduler: Any, store: ScheduleStore, jobs: Any, unique: str
) -> None:
    import ray

    name = f"tick-{unique}"
    store.add(Schedule.create(name, "0 3 * * *", ["version"], "test"))
    tomorrow = (dt.datetime.now(UTC) + dt.timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    now = tomorrow + dt.timedelta(seconds=30)
    job_id = f"zsad-{name}-{tomorrow:%Y%m%dT0300}"

    [first] = ray.get(scheduler.tick.remote(now))
    assert (first.submission_id, first.scheduled_for, first.outcome) == (job_id, tomorrow, "submitted")
    assert ray.get(scheduler.tick.remote(now)) == []  # the same scheduled time is not submitted twice
    wait_for_job(jobs, job_id, timeout_s=60)
    assert "zsad-stream" in jobs.get_job_logs(job_id)  # the entrypoint ran `zsad version` with the project's python

    before = _pid(scheduler)
    ray.kill(scheduler, no_restart=False)  # Ray restarts the actor (max_restarts=-1): the schedule is in Redis
    wait_for(lambda: _pid(scheduler) not in (None, before), 60, "the restarted scheduler")
    assert ray.get(scheduler.tick.remote(now)) == []

    # A lost record (a crash between submission and record, or a second scheduler racing): the Jobs API refuses the
    # duplicate submission id, which counts as already submitted.
    store.client.hdel(LAST_RUN_KEY, name)
    [again] = ray.get(scheduler.tick.remote(now))
    assert (again.submission_id, again.outcome) == (job_id, "already-submitted")
    assert store.last_runs()[name].submission_id == job_id

    # Down for three days: only the latest missed time runs.
    [latest] = ray.get(scheduler.tick.remote(now + dt.timedelta(days=3, hours=2)))
    assert latest.scheduled_for == tomorrow + dt.timedelta(days=3) and latest.outcome == "submitted"
    assert job_ids(jobs, f"zsad-{name}-") == sorted([job_id, latest.submission_id])
    wait_for_job(jobs, latest.submission_id, timeout_s=60)
    assert store.remove(name)


def test_cli_adds_lists_and_removes_a_schedule(
    scheduler: Any, dashboard: str, config_path: Path, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    name = f"cli-{unique}"
    options = ["--config", str(config_path)]
    assert main(["schedule", "add", name, "--cron", "0 3 * * *", *options, "--actor", "tester", "--", "version"]) == 0
    out = capsys.readouterr().out
    assert f"schedule {name}: '0 3 * * *' UTC, next run " in out and " UTC: zsad version" in out
    assert "the scheduler runs on this process's Ray cluster" in out
    assert main(["schedule", "add", name, "--cron", "0 4 * * *", *options, "--", "version"]) == 2
    assert f"schedule '{name}' exists" in capsys.readouterr().err

    assert main(["schedule", "list", *options, "--address", dashboard]) == 0
    out = capsys.readouterr().out
    assert name in out and "0 3 * * *" in out and "scheduler: running on " in out
    assert main(["schedule", "list", *options, "--address", dashboard, "--json"]) == 0
    [row] = [row for row in json.loads(capsys.readouterr().out)["schedules"] if row["name"] == name]
    assert row["command"] == ["version"] and row["created_by"] == "tester" and row["last_run"] is None
    assert dt.datetime.fromisoformat(row["next_run"]).time() == dt.time(3, 0)

    assert main(["schedule", "remove", name, *options]) == 0
    assert main(["schedule", "remove", name, *options]) == 2
    assert f"no schedule named '{name}'" in capsys.readouterr().err


def test_a_one_minute_schedule_trains_and_registers_a_candidate_through_the_actor_loop(
    scheduler: Any, store: ScheduleStore, jobs: Any, config: ZsadConfig, config_path: Path, tmp_path: Path,
    unique: str,
) -> None:  # fmt: skip
    import ray

    name = f"train-{unique}"
    command = ["train", "--method", "vcp-clip", "--backbone", "zsad-tiny-vit", "--random-weights", "--image-size", "64",
               "--train-data", TRAIN_DATA, "--eval-data", EVAL_DATA, "--epochs", "1", "--batch-size", "4",
               "--workers", "1", "--no-baseline", "--register", "--name", f"scheduled-{unique}",
               "--storage", str(tmp_path / "runs"), "--config", str(config_path)]  # fmt: skip
    # Disabled below within a few seconds of its first run: start at least 10 s before a minute boundary, so that
    # no following minute falls due in between (a wait of 5 s on average in one start out of six).
    wait_for(lambda: utc_now().second < 50, 11, "a time 10 s before the next minute", step_s=0.2)
    added = utc_now()
    # Added two minutes ago and never run (as if the scheduler had been down since): two scheduled minutes are
    # missed, and only the latest, the current minute, is due now.
    schedule = Schedule.create(name, "* * * * *", command, "test", now=added - dt.timedelta(minutes=2))
    store.add(schedule)

    # The actor's own loop (every 2 s) submits it at its next tick.
    run: LastRun = wait_for(lambda: store.last_runs().get(name), 15, "the first scheduled run", step_s=0.2)
    assert run.scheduled_for > schedule.created_at and run.submission_id == submission_id(name, run.scheduled_for)
    assert run.scheduled_for == added.replace(second=0, microsecond=0)  # the latest missed minute, not the first
    assert ray.get(scheduler.tick.remote(run.scheduled_for + dt.timedelta(seconds=30))) == []  # not twice
    store.add(dataclasses.replace(schedule, enabled=False), replace=True)  # no run for the following minutes

    wait_for_job(jobs, run.submission_id, timeout_s=150)
    # The scheduler refreshes the recorded status of the run it submitted.
    wait_for(lambda: store.last_runs()[name].status == "SUCCEEDED", 15, "the recorded status")
    assert job_ids(jobs, f"zsad-{name}-") == [run.submission_id]

    with connect(config.redis) as client:
        registry = ArtifactRegistry(config.registry.root, client, namespace=config.registry.namespace)
        entry = registry.resolve("vcp-clip", "candidate")
    assert entry.created_by == f"zsad-train:scheduled-{unique}" and entry.training_data == TRAIN_DATA
    assert store.remove(name)
