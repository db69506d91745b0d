"""The audit stream operators read (``zsad registry audit``): alias moves, settings changes, refused loads, drift
episodes and ingest's offset resets, newest last.

Why one writer: every entry goes through :func:`append_audit`, which trims the stream as it appends, so the stream
holds about the newest :data:`AUDIT_MAX_ENTRIES` entries instead of growing with every drift episode and reset for
as long as the system runs. The trim is approximate (Redis drops whole internal nodes, so up to one node more, 100
entries with Redis's defaults, may stay), which keeps each append O(1).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

AUDIT_MAX_ENTRIES = 10_000


def audit_key(namespace: str) -> str:
    """The audit stream of the registry ``namespace``."""
    return f"{namespace}:audit"


def append_audit(client: Any, namespace: str, fields: Mapping[str, str]) -> Any:
    """Append ``fields`` to ``namespace``'s audit stream through ``client`` (a redis-py client or pipeline) and
    trim it; returns what ``XADD`` returns (the entry id, or the pipeline when queued)."""
    return client.xadd(audit_key(namespace), dict(fields), maxlen=AUDIT_MAX_ENTRIES, approximate=True)
