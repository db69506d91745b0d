"""The gateway's tests start no Ray: ``make test`` runs them on its third worker, beside the unit tests and away
from the Ray clusters of the other two (tests/scheduling.py)."""

from __future__ import annotations

import pytest

RAY_FIXTURES = {"local_ray", "ray_serve", "dashboard_ray"}


@pytest.fixture(autouse=True)
def _no_ray(request: pytest.FixtureRequest) -> None:
    """Fail a gateway test that asks for a Ray, before it starts one."""
    asked = RAY_FIXTURES & set(request.fixturenames)
    if asked:
        pytest.fail(f"{request.node.nodeid} asks for {sorted(asked)}: the gateway's tests start no Ray "
                    "(tests/scheduling.py); put the test under tests/integration/ beside the other Ray tests")
