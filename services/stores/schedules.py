"""Scheduled retraining: what a schedule is, how it is checked, and where it is kept (Redis).

Why apart from the scheduler actor (:mod:`services.prompt_lifecycle.scheduler_actor`): ``zsad schedule add`` checks
and stores schedules without Ray, and the actor checks again, with the same functions, what it reads back from Redis
before it submits anything, so a record written to Redis by hand cannot start anything but a valid ``zsad`` command.

What may run: one of the sub-commands declared in :data:`SCHEDULABLE_COMMANDS` with its arguments, checked
against that declaration when the schedule is added. Why a declaration of its own instead of the CLI's parser:
the scheduler actor checks every command again before it submits it, and importing the CLI there would load every
command's module into the actor and make the stores depend on the top layer (a unit test checks that
the declaration accepts exactly the options of the CLI's parser for those sub-commands). Ray Jobs runs an
entrypoint through a shell, so the entrypoint is built here from that argument list with every argument
shlex-quoted (:func:`entrypoint`): no text a client stores is ever run as shell code.

Times are UTC: cron expressions are evaluated in UTC, and the scheduled time (minute resolution, the finest a
five-field cron expression has) names the run: ``zsad-<name>-<YYYYmmddTHHMM>`` (:func:`submission_id`).

Redis layout (tiny traffic, no hash tags):

* ``zsad:schedules``: hash, schedule name -> JSON of :class:`Schedule`.
* ``zsad:schedules:last-run``: hash, schedule name -> JSON of :class:`LastRun`, written by the scheduler.
* ``zsad:schedules:scheduler``: string with a TTL, the scheduler's heartbeat (JSON: tick time, host, pid, the last
  tick's error), so ``zsad schedule list`` can tell whether anything runs the schedules, and whether it can.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import logging
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import redis
from croniter import CroniterError, croniter

from services.arg_types import non_negative_int, positive_float, positive_int
from services.config import ray_resource
from zsad_core.errors import ZsadError

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEDULES_KEY = "zsad:schedules"
LAST_RUN_KEY = "zsad:schedules:last-run"
HEARTBEAT_KEY = "zsad:schedules:scheduler"
CLI_MODULE = "services.cli.main"
# Job statuses after which a run changes no more (the Jobs API's, plus REFUSED for a schedule the scheduler would
# not submit, e.g. a hand-edited record with an invalid command).
FINAL_STATUSES = frozenset({"SUCCEEDED", "FAILED", "STOPPED", "REFUSED"})
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
# croniter's get_prev(t) is exclusive of t: starting a microsecond later makes a time that matches count as due.
_INCLUSIVE = dt.timedelta(microseconds=1)


class ScheduleError(ZsadError, ValueError):
    """A schedule cannot be added or run: bad name, bad cron expression, a command that is not ``zsad``'s."""

    reason = "schedule"


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC (all schedule times are)."""
    return dt.datetime.now(dt.UTC)


def check_name(name: str) -> str:
    """``name`` if it fits in a submission id and a Redis field: letters, digits, ``_.-``, at most 64 characters."""
    if not _NAME_RE.fullmatch(name):
        raise ScheduleError(
            f"bad schedule name {name!r}: use letters, digits, '_', '.', '-' (at most 64, "
            "starting with a letter or digit)"
        )
    return name


def check_cron(expression: str) -> str:
    """The expression, normalised (single spaces), if it is a five-field cron expression or an ``@daily``-style alias.

    Why only five fields: runs are named after their scheduled minute, so a seconds field (croniter's sixth) would
    give two runs the same name.
    """
    normalised = " ".join(expression.split())
    if len(normalised.split(" ")) != 5 and not normalised.startswith("@"):
        raise ScheduleError(
            f"bad cron expression {expression!r}: give five fields (minute hour day-of-month month "
            "day-of-week, e.g. '0 3 * * *') or an alias such as @daily"
        )
    try:
        croniter(normalised, utc_now())
    except CroniterError as exc:
        raise ScheduleError(f"bad cron expression {expression!r}: {exc}") from None
    return normalised


@dataclass(frozen=True)
class CommandOption:
    """One option of a schedulable sub-command, as far as checking a command line needs it.

    Attributes:
        names: the option strings (``--train-data`` and its aliases).
        takes_value: False for a flag (``--register``), True for an option with one value.
        value_type: converts the value; a value it refuses makes the command invalid (``--epochs two``).
        required: the sub-command refuses to run without it.
    """

    names: tuple[str, ...]
    takes_value: bool = True
    value_type: Callable[[str], Any] = str
    required: bool = False


@dataclass(frozen=True)
class SchedulableCommand:
    """A ``zsad`` sub-command that a schedule may run, with every option it accepts."""

    options: tuple[CommandOption, ...] = field(default_factory=tuple)

    def option(self, name: str) -> CommandOption | None:
        """The option called ``name`` (or with ``name`` as an alias), if the sub-command has it."""
        return next((option for option in self.options if name in option.names), None)


def _flag(name: str) -> CommandOption:
    return CommandOption((name,), takes_value=False)


# ``zsad train`` (the Ray Train job: retraining is what schedules are for) and ``zsad version`` (a harmless run
# that shows a schedule works end to end).
SCHEDULABLE_COMMANDS: dict[str, SchedulableCommand] = {
    "version": SchedulableCommand(),
    "train": SchedulableCommand(
        (
            CommandOption(("--method",)),
            CommandOption(("--backbone",)),
            CommandOption(("--backbone-weights",)),
            _flag("--random-weights"),
            CommandOption(("--image-size",), value_type=positive_int),
            CommandOption(("--train-data", "--dataset"), required=True),
            CommandOption(("--eval-data", "--eval-dataset"), required=True),
            CommandOption(("--epochs",), value_type=positive_int),
            CommandOption(("--batch-size",), value_type=positive_int),
            CommandOption(("--seed",), value_type=non_negative_int),
            CommandOption(("--lr",), value_type=positive_float),
            CommandOption(("--workers",), value_type=positive_int),
            _flag("--gpu"),
            _flag("--one-per-node"),
            CommandOption(("--worker-resource",), value_type=ray_resource),
            CommandOption(("--name",)),
            CommandOption(("--storage",)),
            CommandOption(("--max-failures",), value_type=non_negative_int),
            _flag("--no-baseline"),
            _flag("--register"),
            CommandOption(("--address", "--ray-address")),
            CommandOption(("--config",)),
        )
    ),
}
RAY_ADDRESS_OPTION = "--address"


def _command_parser() -> argparse.ArgumentParser:
    """An argparse parser of the declared sub-commands: the same syntax rules as the CLI's (``--opt=value``,
    ``--help`` is not a run, a missing required option is an error)."""
    parser = argparse.ArgumentParser(prog="zsad")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, declared in SCHEDULABLE_COMMANDS.items():
        sub = commands.add_parser(name)
        for option in declared.options:
            if option.takes_value:
                sub.add_argument(*option.names, type=option.value_type, required=option.required)
            else:
                sub.add_argument(*option.names, action="store_true")
    return parser


def check_command(args: Sequence[str]) -> list[str]:
    """The ``zsad`` arguments a schedule will run, checked against :data:`SCHEDULABLE_COMMANDS`.

    Returns the arguments, plus ``--address auto`` for a command that has that option and was not given it:
    a scheduled run must use the cluster it runs on (the Jobs API gives its driver ``RAY_ADDRESS``), while
    ``zsad train`` without the option starts a Ray cluster of its own.

    Raises:
        ScheduleError: no sub-command, an option where the sub-command should be, a sub-command that is not
            schedulable, or arguments the sub-command refuses (argparse's message is included).
    """
    command = list(args)
    if not command or command[0].startswith("-"):
        raise ScheduleError(
            "a schedule runs one zsad sub-command: give it after '--', e.g. "
            "'-- train --method vcp-clip --train-data ... --eval-data ...'"
        )
    if command[0] not in SCHEDULABLE_COMMANDS:
        raise ScheduleError(
            f"not a valid zsad command: zsad {shlex.join(command)}: schedules run "
            f"{' or '.join(sorted(SCHEDULABLE_COMMANDS))}, not {command[0]!r}"
        )
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parsed = _command_parser().parse_args(command)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        why = lines[-1] if lines else "it asks for help, it is not a run"
        raise ScheduleError(f"not a valid zsad command: zsad {shlex.join(command)}: {why}") from None
    if SCHEDULABLE_COMMANDS[command[0]].option(RAY_ADDRESS_OPTION) and parsed.address is None:
        command += [RAY_ADDRESS_OPTION, "auto"]
    return command


def entrypoint(command: Sequence[str], python: str) -> str:
    """The shell text of a Ray Job that runs ``zsad <command>`` with the interpreter ``python``, every word quoted."""
    return shlex.join([python, "-m", CLI_MODULE, *command])


def submission_id(name: str, scheduled_for: dt.datetime) -> str:
    """The Ray Job submission id of a schedule's run at ``scheduled_for``: the same time always gives the same id."""
    return f"zsad-{name}-{scheduled_for.astimezone(dt.UTC):%Y%m%dT%H%M}"


def latest_due(cron: str, now: dt.datetime, after: dt.datetime) -> dt.datetime | None:
    """The latest scheduled time that is at or before ``now`` and later than ``after``, if any."""
    latest: dt.datetime = croniter(cron, now + _INCLUSIVE).get_prev(dt.datetime)
    return latest if latest > after else None


def next_run(cron: str, now: dt.datetime) -> dt.datetime:
    """The first scheduled time after ``now``."""
    return croniter(cron, now).get_next(dt.datetime)


@dataclass(frozen=True)
class Schedule:
    """One scheduled command.

    Attributes:
        name: unique; part of every run's submission id.
        cron: five-field cron expression (UTC).
        command: the ``zsad`` arguments (sub-command first), as checked by :func:`check_command`.
        created_at, created_by: when and by whom it was added; no run is due before ``created_at``.
        enabled: False keeps the schedule without running it.
    """

    name: str
    cron: str
    command: list[str]
    created_at: dt.datetime
    created_by: str
    enabled: bool = True

    @classmethod
    def create(
        cls,
        name: str,
        cron: str,
        command: Sequence[str],
        created_by: str,
        *,
        enabled: bool = True,
        now: dt.datetime | None = None,
    ) -> Schedule:
        """A checked schedule (name, cron expression and command are validated here)."""
        return cls(check_name(name), check_cron(cron), check_command(command), now or utc_now(), created_by, enabled)

    def to_json(self) -> str:
        """The Redis value."""
        return json.dumps({**asdict(self), "created_at": self.created_at.isoformat()})

    @classmethod
    def from_json(cls, text: str | bytes) -> Schedule:
        """Read a Redis value back (not re-validated: the scheduler checks before it runs anything)."""
        record: dict[str, Any] = json.loads(text)
        return cls(**{**record, "created_at": dt.datetime.fromisoformat(record["created_at"])})


@dataclass(frozen=True)
class LastRun:
    """The latest run the scheduler submitted (or refused) for a schedule.

    Attributes:
        submission_id: the Ray Job's submission id.
        scheduled_for: the scheduled time it runs for.
        status: the Jobs API's status when last seen (``PENDING``, ``RUNNING``, ``SUCCEEDED``, ...) or ``REFUSED``.
        submitted_at: when the scheduler submitted it.
        message: why it was refused, if it was.
    """

    submission_id: str
    scheduled_for: dt.datetime
    status: str
    submitted_at: dt.datetime
    message: str = ""

    def to_json(self) -> str:
        """The Redis value."""
        return json.dumps(
            {
                **asdict(self),
                "scheduled_for": self.scheduled_for.isoformat(),
                "submitted_at": self.submitted_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LastRun:
        """Read a Redis value back."""
        record: dict[str, Any] = json.loads(text)
        return cls(
            **{
                **record,
                "scheduled_for": dt.datetime.fromisoformat(record["scheduled_for"]),
                "submitted_at": dt.datetime.fromisoformat(record["submitted_at"]),
            }
        )


@dataclass
class ScheduleStore:
    """Schedules and their last runs in Redis (see the module docstring for the keys)."""

    client: redis.Redis
    heartbeat_ttl_s: int = 30

    def add(self, schedule: Schedule, *, replace: bool = False) -> None:
        """Store ``schedule``; an existing name is refused unless ``replace`` (its last run is kept either way, so a
        replaced schedule still never runs a scheduled time twice)."""
        if replace:
            self.client.hset(SCHEDULES_KEY, schedule.name, schedule.to_json())
        elif not self.client.hsetnx(SCHEDULES_KEY, schedule.name, schedule.to_json()):
            raise ScheduleError(f"schedule {schedule.name!r} exists; remove it first or add it with --replace")

    def remove(self, name: str) -> bool:
        """Delete a schedule and its last-run record; False when there was no such schedule."""
        with self.client.pipeline() as pipe:
            pipe.hdel(SCHEDULES_KEY, name)
            pipe.hdel(LAST_RUN_KEY, name)
            removed, _ = pipe.execute()
        return bool(removed)

    def schedules(self) -> list[Schedule]:
        """Every readable stored schedule, by name (an unreadable record is logged and skipped, so one hand-edited
        record cannot stop every other schedule)."""
        records = _readable(self.client.hgetall(SCHEDULES_KEY), Schedule.from_json)
        return sorted(records.values(), key=lambda item: item.name)

    def last_runs(self) -> dict[str, LastRun]:
        """Schedule name -> its last run (unreadable records skipped, as in :meth:`schedules`)."""
        return _readable(self.client.hgetall(LAST_RUN_KEY), LastRun.from_json)

    def record(self, name: str, run: LastRun) -> None:
        """Write a schedule's last run."""
        self.client.hset(LAST_RUN_KEY, name, run.to_json())

    def beat(self, payload: dict[str, Any]) -> None:
        """The scheduler's heartbeat; it expires after ``heartbeat_ttl_s`` unless renewed."""
        self.client.set(HEARTBEAT_KEY, json.dumps(payload), ex=self.heartbeat_ttl_s)

    def heartbeat(self) -> dict[str, Any] | None:
        """The latest heartbeat, or None when no scheduler has ticked within the TTL."""
        value = self.client.get(HEARTBEAT_KEY)
        return None if value is None else json.loads(value)


def _readable(records: dict[bytes, bytes], parse: Callable[[bytes], T]) -> dict[str, T]:
    parsed: dict[str, T] = {}
    for name, value in records.items():
        try:
            parsed[name.decode()] = parse(value)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("unreadable schedule record %r skipped: %s", name, exc)
    return parsed
