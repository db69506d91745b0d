"""How long to wait before retrying: doubling per attempt, capped, and jittered.

Why jitter: the ingest tasks and actors that lost the same broker, replica or Redis at the same moment would
otherwise retry in lockstep and arrive together the moment it comes back.
"""

from __future__ import annotations

import random

_MAX_DOUBLINGS = 62  # beyond this the wait is capped anyway; keeps 2**n a small integer


def backoff_s(attempt: int, first_s: float, longest_s: float) -> float:
    """The wait before retry ``attempt`` (1 for the first retry): between half and all of ``first_s`` doubled
    ``attempt - 1`` times, capped at ``longest_s``.

    Raises:
        ValueError: ``attempt`` is below 1.
    """
    if attempt < 1:
        raise ValueError(f"backoff attempt must be 1 or more, got {attempt}")
    ceiling = min(first_s * 2 ** min(attempt - 1, _MAX_DOUBLINGS), longest_s)
    return ceiling / 2 + random.uniform(0.0, ceiling / 2)  # noqa: S311 - spreads retries, guards no secret
