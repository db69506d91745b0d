"""Range-checked argparse types, shared by the CLI and the schedules that check its command lines.

Why range checks at parse time: ``--batch-size 0`` or ``--fps -1`` would otherwise fail deep inside a run (or,
worse, run with a meaningless value); argparse then names the option and the bad value in one line.
"""

from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, batch sizes)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (worker counts where 0 means inline, retries, offsets)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates)."""
    value = float(text)
    if not 0.0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (rates where 0 means unlimited)."""
    value = float(text)
    if not 0.0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number in [0, 1] (weights, rates, confidence levels)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {text}")
    return value


def open_fraction(text: str) -> float:
    """A number in (0, 1) (false-reject rates and confidence levels, where 0 and 1 cannot be estimated)."""
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (thresholds: some methods' scores are negative)."""
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _int_in(text: str, low: int, high: int) -> int:
    value = int(text)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must lie in {low}..{high}, got {value}")
    return value


def jpeg_quality(text: str) -> int:
    """A JPEG quality, 1 (smallest) to 100 (best)."""
    return _int_in(text, 1, 100)


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    return _int_in(text, 1, 65535)
