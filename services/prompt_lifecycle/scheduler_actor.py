"""The scheduler of scheduled retraining: a detached Ray actor that submits due schedules as Ray Jobs.

Why an actor on the cluster: it outlives the CLI that started it, Ray restarts it if its process dies
(``max_restarts=-1``), and it needs nothing but Redis (the schedules, :mod:`services.stores.schedules`) and the Jobs
API of the cluster it runs on (found through the Ray connection, so nobody passes it the dashboard's address). There
is one per cluster: named :data:`ACTOR_NAME` in namespace :data:`NAMESPACE`, started by :func:`ensure_scheduler`.

Every ``interval_s`` seconds :meth:`Scheduler.tick` reads the schedules and, for each enabled one, the latest
scheduled time that is due (after both its creation and its last run), and submits it as a Ray Job.

Missed runs: only the *latest* scheduled time is ever due. A scheduler that was down over several scheduled times
runs the latest missed one once when it is back, not one run per missed time (a newer retraining supersedes the
older ones).

At most one run per scheduled time, even with two schedulers racing or one restarting between a submission and
its record: the run's submission id is derived from the schedule's name and the scheduled time
(:func:`services.stores.schedules.submission_id`), the last run is recorded in Redis and nothing at or before it is due
again, and the Jobs API refuses a second job with an existing submission id. A refused submission whose id the
Jobs API knows counts as already submitted (it is recorded, not retried); any other failed submission is retried
at the next tick.

Where a run executes: the Jobs API starts the entrypoint in a shell on the head node, in the directory the Ray head
was started from (``zsad up``: the project directory), so relative paths in a schedule's arguments (``--storage``
and the default ``--config``) are relative to it. The entrypoint uses the scheduler's own interpreter
(``sys.executable``: the project's venv), not whatever ``python`` comes first on the raylet's ``PATH``. Nothing is
uploaded: the project must be installed at the same path on every node, as in the Docker image of ``deploy/``,
and the data, storage and registry paths a schedule names must be visible to the nodes that use them (a shared
file system), as for any ``zsad train``. The job's environment is the raylet's plus :data:`JOB_ENV_VARS`.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from services.stores.schedules import (
    FINAL_STATUSES,
    LastRun,
    Schedule,
    ScheduleError,
    ScheduleStore,
    check_command,
    check_cron,
    check_name,
    entrypoint,
    latest_due,
    submission_id,
    utc_now,
)

if TYPE_CHECKING:
    import datetime as dt

    from ray.actor import ActorHandle
    from ray.job_submission import JobSubmissionClient

    from services.config import RedisConfig

log = logging.getLogger(__name__)

ACTOR_NAME = "zsad-scheduler"
NAMESPACE = "zsad"
DEFAULT_INTERVAL_S = 5.0
# A scheduled run is unattended: it must use local weights and fail with a clear message rather than wait on a model
# hub the cluster may not reach. (The job inherits the raylet's environment; a node started with `ray start` need
# not have this set, `zsad up` does.)
JOB_ENV_VARS = {"ZSAD_OFFLINE": "1"}

Outcome = Literal["submitted", "already-submitted", "refused", "failed"]


@dataclass(frozen=True)
class Submission:
    """What a tick did about one due run: ``failed`` runs (Jobs API unreachable, ...) are retried next tick."""

    name: str
    submission_id: str
    scheduled_for: dt.datetime
    outcome: Outcome
    message: str = ""


def _job_exists(jobs: JobSubmissionClient, job_id: str) -> bool:
    try:
        jobs.get_job_info(job_id)
    except RuntimeError:  # the SDK's error for any non-200 answer, 404 for an unknown id included
        return False
    return True


def _submit(
    store: ScheduleStore, jobs: JobSubmissionClient, schedule: Schedule, due: dt.datetime, now: dt.datetime
) -> Submission:
    job_id = submission_id(schedule.name, due)
    try:
        command = check_command(schedule.command)  # a record edited in Redis by hand is checked like a new one
    except ScheduleError as exc:
        store.record(schedule.name, LastRun(job_id, due, "REFUSED", now, str(exc)))
        return Submission(schedule.name, job_id, due, "refused", str(exc))
    outcome: Outcome = "submitted"
    try:
        jobs.submit_job(
            entrypoint=entrypoint(command, sys.executable),
            submission_id=job_id,
            runtime_env={"env_vars": dict(JOB_ENV_VARS)},
            metadata={"zsad_schedule": schedule.name, "scheduled_for": due.isoformat()},
        )
    except (RuntimeError, OSError) as exc:  # the SDK raises RuntimeError for refusals, OSError when unreachable
        if not _job_exists(jobs, job_id):
            return Submission(schedule.name, job_id, due, "failed", str(exc))
        outcome = "already-submitted"
    # PENDING until the next tick's refresh reads the job's real status.
    store.record(schedule.name, LastRun(job_id, due, "PENDING", now))
    return Submission(schedule.name, job_id, due, outcome)


def _refresh(store: ScheduleStore, jobs: JobSubmissionClient, name: str, run: LastRun) -> LastRun:
    """Update the recorded status of a run that has not finished (a job unknown to the cluster keeps its record)."""
    if run.status in FINAL_STATUSES:
        return run
    try:
        status = str(jobs.get_job_status(run.submission_id))
    except (RuntimeError, OSError):
        return run
    if status != run.status:
        run = LastRun(run.submission_id, run.scheduled_for, status, run.submitted_at, run.message)
        store.record(name, run)
    return run


def submit_due(store: ScheduleStore, jobs: JobSubmissionClient, now: dt.datetime) -> list[Submission]:
    """Submit every enabled schedule's latest due run (see the module docstring); returns what was done."""
    done: list[Submission] = []
    last_runs = store.last_runs()
    for schedule in store.schedules():
        last = last_runs.get(schedule.name)
        if last is not None:
            last = _refresh(store, jobs, schedule.name, last)
        if not schedule.enabled:
            continue
        try:
            check_name(schedule.name)
            cron = check_cron(schedule.cron)
        except ScheduleError as exc:  # a hand-edited record: no scheduled time can even be computed
            log.warning("schedule %r skipped: %s", schedule.name, exc)
            continue
        after = max(schedule.created_at, last.scheduled_for) if last is not None else schedule.created_at
        due = latest_due(cron, now, after)
        if due is not None:
            done.append(_submit(store, jobs, schedule, due, now))
    return done


class Scheduler:
    """The actor's body: a background loop calling :meth:`tick`, which tests may also call with a chosen ``now``."""

    def __init__(self, redis_config: RedisConfig, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        from services.stores.result_store import connect

        self._redis_url = redis_config.url
        self._interval_s = interval_s
        self._store = ScheduleStore(connect(redis_config), heartbeat_ttl_s=max(10, int(3 * interval_s)))
        self._jobs: JobSubmissionClient | None = None
        self._lock = threading.Lock()  # the loop and remote tick() calls never interleave
        self._ticks = 0
        threading.Thread(target=self._loop, name="zsad-scheduler", daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                for item in self.tick():
                    log.info("schedule %s: %s %s %s", item.name, item.outcome, item.submission_id, item.message)
            except Exception:  # Redis or the dashboard may be briefly away: log it and tick again
                log.exception("scheduler tick failed")
            time.sleep(self._interval_s)

    def _client(self) -> JobSubmissionClient:
        if self._jobs is None:
            import ray
            from ray.job_submission import JobSubmissionClient

            # This cluster's own address: with None the SDK would guess, and fails when the machine runs another Ray.
            self._jobs = JobSubmissionClient(ray.get_runtime_context().gcs_address)
        return self._jobs

    def tick(self, now: dt.datetime | None = None) -> list[Submission]:
        """Submit what is due at ``now`` (default: the current time) and renew the heartbeat.

        The heartbeat is renewed after a failed tick too, with the error, so ``zsad schedule list`` can tell a
        scheduler that runs but cannot submit from one that does not run.
        """
        with self._lock:
            self._ticks += 1
            error = ""
            try:
                return submit_due(self._store, self._client(), now or utc_now())
            except Exception as exc:
                self._jobs = None  # reconnect at the next tick
                error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self._store.beat(
                    {
                        "ticked_at": utc_now().isoformat(),
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "interval_s": self._interval_s,
                        "error": error,
                    }
                )

    def describe(self) -> dict[str, Any]:
        """Which Redis the scheduler reads, how often it ticks, its process and its ticks since it (re)started."""
        return {"redis_url": self._redis_url, "interval_s": self._interval_s, "pid": os.getpid(), "ticks": self._ticks}


def ensure_scheduler(redis_config: RedisConfig, *, interval_s: float = DEFAULT_INTERVAL_S) -> ActorHandle:
    """The cluster's scheduler actor, started if it does not run yet (the caller holds the Ray connection).

    Safe to call from several processes at once (``get_if_exists``). An existing scheduler keeps its settings;
    one that reads another Redis is an error, since schedules stored in this one would never run.

    Raises:
        ScheduleError: the running scheduler reads another Redis.
    """
    import ray

    actor = (
        ray.remote(Scheduler)
        .options(
            name=ACTOR_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0, max_restarts=-1
        )
        .remote(redis_config, interval_s)
    )
    running = ray.get(actor.describe.remote(), timeout=120)
    if running["redis_url"] != redis_config.url:
        raise ScheduleError(
            f"the scheduler of this Ray cluster reads {running['redis_url']}, not "
            f"{redis_config.url}: schedules stored here would never run. Stop it with "
            f"ray.kill(ray.get_actor({ACTOR_NAME!r}, namespace={NAMESPACE!r})) or use its Redis."
        )
    return actor
