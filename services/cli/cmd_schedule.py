"""``zsad schedule add|list|remove``: run zsad commands (nightly retraining) as Ray Jobs on a cron schedule.

Schedules live in the Redis of the configuration (``--config``), and the cluster's scheduler actor submits
them (:mod:`~services.prompt_lifecycle.scheduler_actor`). ``add`` starts that actor when it does not run yet, on
the Ray cluster of ``--address``, else of the local stack (``zsad up``), else of this process's own Ray
connection (a notebook, a test). With no cluster at all the schedule is still stored and runs once a scheduler
is started there.

Example::

    zsad schedule add nightly --cron "0 3 * * *" -- train --method vcp-clip --train-data visa:/data/visa \\
        --eval-data mvtec:/data/mvtec --register
"""

from __future__ import annotations

import argparse
import json
import shlex
from typing import TYPE_CHECKING, Any

from services.cli.options import add_actor_option, add_address_option, add_config_option, config_from_args
from services.state_home import stack_dir

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from services.config import ZsadConfig
    from services.local_stack.stack_process import StackState
    from services.stores.schedules import LastRun

COLUMNS = ("NAME", "CRON (UTC)", "NEXT RUN (UTC)", "LAST RUN", "STATUS", "COMMAND")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad schedule add|list|remove``."""
    schedule = commands.add_parser("schedule", help="run zsad commands (retraining) as Ray Jobs on a cron schedule")
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    add = actions.add_parser(
        "add",
        help="store a schedule and make sure the cluster's scheduler runs",
        usage="zsad schedule add NAME --cron EXPR [options] -- COMMAND [ARG ...]",
    )
    add.add_argument("name", help="schedule name (letters, digits, '_.-'); names its runs zsad-NAME-<time>")
    add.add_argument("--cron", required=True, help="five-field cron expression in UTC, e.g. '0 3 * * *'")
    add.add_argument("--disabled", action="store_true", help="store it without running it")
    add.add_argument("--replace", action="store_true", help="replace a schedule of the same name")
    add_actor_option(add, "who adds it, stored with it")
    add_address_option(add, "the Ray cluster to start the scheduler on (default: the local stack's)")
    add_config_option(add)
    add.add_argument(
        "command",
        nargs="+",  # not REMAINDER: after a positional, Python 3.11's REMAINDER would swallow --cron too
        metavar="COMMAND",
        help="the zsad sub-command and its arguments, after '--'",
    )
    add.set_defaults(func=cmd_add)

    listing = actions.add_parser("list", help="schedules with their next run and their last run's job status")
    add_address_option(listing, "Ray dashboard whose Jobs API has the runs' statuses, as `ray job list --address` "
                                "takes it (default: the local stack's)", old="--dashboard-url")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_config_option(listing)
    listing.set_defaults(func=cmd_list)

    remove = actions.add_parser("remove", help="delete a schedule (a run already submitted goes on)")
    remove.add_argument("name", help="the schedule's name")
    add_config_option(remove)
    remove.set_defaults(func=cmd_remove)


def _stack() -> StackState | None:
    """The local stack's state when it is up."""
    from services.local_stack.control import running_stack

    state = running_stack(stack_dir())
    return state if state is not None and state.status == "ready" else None


def _start_scheduler(args: argparse.Namespace, config: ZsadConfig) -> str:
    """Make sure the cluster's scheduler runs; says where (or why it could not).

    A process that already holds a Ray connection (a notebook, a test) uses it, as ``zsad train`` does; otherwise
    ``--address`` or the local stack's cluster is joined for the call.
    """
    from services.local_stack.stack_process import prepare_local_ray_driver

    stack = _stack()
    address = args.address or (stack.ray_address if stack is not None else None)
    if address is not None:
        prepare_local_ray_driver(address)  # before Ray is imported: the local stack's node is loopback-only
    import ray

    from services.prompt_lifecycle.scheduler_actor import ensure_scheduler

    if ray.is_initialized():
        ensure_scheduler(config.redis)
        return "the scheduler runs on this process's Ray cluster"
    if address is None:
        return (
            "no Ray cluster found (zsad up, or --address): the schedule is stored and runs once the "
            "cluster's scheduler is started (zsad schedule add with a cluster up)"
        )
    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        ensure_scheduler(config.redis)
    finally:
        ray.shutdown()
    return f"the scheduler runs on the Ray cluster at {address}"


def cmd_add(args: argparse.Namespace) -> int:
    """Check the schedule, start the scheduler if a cluster is there, store the schedule."""
    from services.stores.result_store import connect
    from services.stores.schedules import Schedule, ScheduleStore, next_run, utc_now

    schedule = Schedule.create(args.name, args.cron, args.command, args.actor, enabled=not args.disabled)
    config = config_from_args(args)
    where = _start_scheduler(args, config)
    with connect(config.redis) as client:
        ScheduleStore(client).add(schedule, replace=args.replace)
    when = f"next run {next_run(schedule.cron, utc_now()):%Y-%m-%d %H:%M} UTC" if schedule.enabled else "disabled"
    print(f"schedule {schedule.name}: '{schedule.cron}' UTC, {when}: zsad {shlex.join(schedule.command)}")
    print(where)
    return 0


def _jobs_client(args: argparse.Namespace) -> JobSubmissionClient | None:
    """The Jobs API of ``--address``, else this process's Ray, else the local stack; None when none answers."""
    import ray
    from ray.job_submission import JobSubmissionClient

    address = args.address
    if address is None and ray.is_initialized():
        address = ray.get_runtime_context().gcs_address  # the SDK finds this cluster's dashboard through it
    if address is None:
        stack = _stack()
        if stack is None:
            return None
        address = stack.dashboard_url
    try:
        return JobSubmissionClient(address)
    except (OSError, RuntimeError, ValueError):
        return None


def _status(jobs: JobSubmissionClient | None, run: LastRun | None) -> str:
    """The run's live status from the Jobs API, else the one the scheduler recorded, marked as such."""
    if run is None:
        return "-"
    if jobs is not None:
        try:
            return str(jobs.get_job_status(run.submission_id))
        except (OSError, RuntimeError):
            pass  # unknown to this cluster (e.g. started anew since): fall back on the record
    return f"{run.status} (recorded)"


def _rows(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    from services.stores.result_store import connect
    from services.stores.schedules import ScheduleStore, next_run, utc_now

    with connect(config_from_args(args).redis) as client:
        store = ScheduleStore(client)
        schedules, runs, heartbeat = store.schedules(), store.last_runs(), store.heartbeat()
    jobs = _jobs_client(args) if runs else None
    now = utc_now()
    rows = []
    for schedule in schedules:
        run = runs.get(schedule.name)
        rows.append({
            "name": schedule.name, "cron": schedule.cron, "enabled": schedule.enabled,
            "next_run": next_run(schedule.cron, now).isoformat() if schedule.enabled else None,
            "last_run": run.submission_id if run else None, "status": _status(jobs, run),
            "message": run.message if run else "", "command": schedule.command,
            "created_at": schedule.created_at.isoformat(), "created_by": schedule.created_by,
        })  # fmt: skip
    return rows, heartbeat


def cmd_list(args: argparse.Namespace) -> int:
    """Print the schedules, their next run, their last run and its status, and whether a scheduler ticks."""
    rows, heartbeat = _rows(args)
    if args.json:
        print(json.dumps({"schedules": rows, "scheduler": heartbeat}, indent=2))
        return 0
    table = [COLUMNS] + [
        (
            row["name"],
            row["cron"],
            row["next_run"][:16].replace("T", " ") if row["next_run"] else "disabled",
            row["last_run"] or "-",
            row["status"],
            f"zsad {shlex.join(row['command'])}",
        )
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(len(COLUMNS) - 1)]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=False)) + "  " + line[-1])
    for row in rows:
        if row["message"]:
            print(f"{row['name']}: {row['message']}")
    if heartbeat is None:
        print("scheduler: not running (no heartbeat): schedules run only while a scheduler runs on the cluster")
    else:
        failed = f"; it failed: {heartbeat['error']}" if heartbeat.get("error") else ""
        print(
            f"scheduler: running on {heartbeat['host']} (pid {heartbeat['pid']}), last tick {heartbeat['ticked_at']}"
            f"{failed}"
        )
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    """Delete a schedule and its last-run record."""
    from services.stores.result_store import connect
    from services.stores.schedules import ScheduleError, ScheduleStore

    with connect(config_from_args(args).redis) as client:
        removed = ScheduleStore(client).remove(args.name)
    if not removed:
        raise ScheduleError(f"no schedule named {args.name!r} (zsad schedule list shows them)")
    print(f"removed schedule {args.name}; a run it already submitted goes on (ray job stop stops it)")
    return 0
