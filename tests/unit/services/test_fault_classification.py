"""Which failures of a call to serving are the frame's fault (bounded retries, then the DLQ) or the system's."""

from __future__ import annotations

import pytest
import redis
from ray.exceptions import ActorDiedError, RayTaskError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from services.frame_path.decoding import ModelUnavailableError
from services.frame_path.ingest_loop import is_frame_fault


def _raised_in_replica(cause: BaseException) -> RayTaskError:
    return RayTaskError("score", "Traceback: ...", cause)


@pytest.mark.parametrize(
    "error",
    [
        ActorDiedError(),
        DeploymentUnavailableError(DeploymentID(name="Inspector", app_name="zsad")),
        BackPressureError(num_queued_requests=9, max_queued_requests=8),
        ConnectionError("refused"),
        _raised_in_replica(redis.ConnectionError("Redis is away")),
        _raised_in_replica(ModelUnavailableError("every frame failed")),
    ],
    ids=["replica died", "deployment unavailable", "back pressure", "network", "redis in replica", "broken model"],
)
def test_system_failures_are_retried_not_dead_lettered(error: BaseException) -> None:
    assert not is_frame_fault(error)


@pytest.mark.parametrize("error", [_raised_in_replica(ValueError("bad pixels")), RuntimeError("unexpected")])
def test_other_errors_count_against_the_frame(error: BaseException) -> None:
    assert is_frame_fault(error)
