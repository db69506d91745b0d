"""What the multi-node scenarios share: a quick node-failure detector for their clusters, and a polling wait.

Imported by ``multinode_scenario.py`` and ``training_scenario.py``, which run as scripts (their folder is on
``sys.path``), each in a child process of its test.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# A node is declared dead after about 3 s of failed health checks instead of Ray's default 30 s or more. Not
# less: with `make test`'s two workers on two cores, a live raylet answered too late three times in 1.5 s and was
# declared dead with the replicas the test expected to survive.
FAST_NODE_FAILURE: dict[str, Any] = {
    "health_check_period_ms": 1000, "health_check_failure_threshold": 3, "health_check_timeout_ms": 1000,
}  # fmt: skip


def wait_for(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.5) -> None:
    """Poll ``predicate`` until it is true.

    Raises:
        AssertionError: naming ``what``, after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)


def scenario_main(run: Callable[[dict[str, Any]], dict[str, Any]], argv: list[str]) -> int:
    """``SCRIPT REQUEST.json OBSERVED.json``: run a scenario on its request and write down what it observed."""
    os.environ["RAY_AUTH_MODE"] = "disabled"  # no token written under the home directory by a test
    request_path, observed_path = argv
    Path(observed_path).write_text(json.dumps(run(json.loads(Path(request_path).read_text()))))
    return 0
