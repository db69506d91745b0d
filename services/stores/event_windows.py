"""The newest events of many cameras, reduced in Redis to the numbers summaries need, in one round trip.

Why a script and not ``XREVRANGE``: the overview and ``zsad status`` compute rates, anomaly shares and latency
percentiles over each camera's newest few hundred events. Read whole, that is every field of every event parsed
in Python: measured at 128 cameras x 500 events, tens of seconds per page (BENCHMARKS.md, "Overview").
The script reads the same events inside Redis and returns per camera three short strings (write times, capture
times, rejected or not) and the newest event's fields, so the numbers are the ones computed from the whole events,
and the transfer stays a few kilobytes per camera.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import redis
from redis.exceptions import NoScriptError

from services.stores.result_store import events_key, scores_key

# KEYS: events stream. ARGV: how many of the newest events.
# Returns {write times, capture times, rejected flags (each a space-separated string, newest first; '' for a
# missing time), the newest event's fields as a flat list}.
# Rejected: the event's decision is "reject", or (events written before decisions existed) its label is 1.
_WINDOW_SCRIPT = """
local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])
local written, captured, rejected = {}, {}, {}
for i, entry in ipairs(entries) do
  local fields = entry[2]
  local write_ts, capture_ts, decision, label = '', '', '', ''
  for j = 1, #fields, 2 do
    local name = fields[j]
    if name == 'write_ts' then write_ts = fields[j + 1]
    elseif name == 'capture_ts' then capture_ts = fields[j + 1]
    elseif name == 'decision' then decision = fields[j + 1]
    elseif name == 'label' then label = fields[j + 1]
    end
  end
  written[i] = write_ts == '' and '-' or write_ts
  captured[i] = capture_ts == '' and '-' or capture_ts
  if decision == 'reject' or (decision == '' and label == '1') then rejected[i] = '1' else rejected[i] = '0' end
end
local newest = {}
if #entries > 0 then newest = entries[1][2] end
return {table.concat(written, ' '), table.concat(captured, ' '), table.concat(rejected, ' '), newest}
"""


@dataclass(frozen=True)
class EventWindow:
    """A camera's newest events, newest first, as the summaries read them.

    Attributes:
        write_ts, capture_ts: per event, seconds since the epoch (``None`` where the event has none).
        rejected: per event, whether it was decided ``reject``.
        newest: the newest event's fields as text (empty without events).
        stored: frames in the camera's score set (:meth:`ResultStore.count_results`).
    """

    write_ts: list[float | None]
    capture_ts: list[float | None]
    rejected: list[bool]
    newest: dict[str, str] = field(default_factory=dict)
    stored: int = 0


def read_event_windows(client: redis.Redis, cameras: Sequence[str], count: int) -> dict[str, EventWindow]:
    """The newest ``count`` events of each camera and its stored-frame count, in one round trip (two when Redis
    lost the cached script)."""
    if not cameras:
        return {}
    sha = client.register_script(_WINDOW_SCRIPT).sha
    replies = _run(client, sha, cameras, count)
    if any(isinstance(reply, NoScriptError) for reply in replies):
        client.script_load(_WINDOW_SCRIPT)
        replies = _run(client, sha, cameras, count)
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return {camera: _window(replies[2 * index], int(replies[2 * index + 1])) for index, camera in enumerate(cameras)}


def _run(client: redis.Redis, sha: str, cameras: Sequence[str], count: int) -> list[object]:
    with client.pipeline(transaction=False) as pipe:
        for camera in cameras:
            # evalsha rather than the Script object, as the result store does: no SCRIPT EXISTS round trip first.
            pipe.evalsha(sha, 1, events_key(camera), count)
            pipe.zcard(scores_key(camera))
        return pipe.execute(raise_on_error=False)


def _window(reply: Sequence[object], stored: int) -> EventWindow:
    written, captured, rejected, newest = reply
    flat = [_text(value) for value in newest]  # type: ignore[union-attr]
    return EventWindow(
        write_ts=_times(written),
        capture_ts=_times(captured),
        rejected=[flag == "1" for flag in _text(rejected).split()],
        newest=dict(zip(flat[::2], flat[1::2], strict=True)),
        stored=stored,
    )


def _times(reply: object) -> list[float | None]:
    times: list[float | None] = []
    for word in _text(reply).split():
        try:
            times.append(float(word))
        except ValueError:
            times.append(None)
    return times


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)

