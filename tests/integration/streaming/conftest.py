"""Fixtures of the streaming tests: applications deployed on the session's Ray Serve, deleted afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stream_helpers import Deployment


@pytest.fixture
def deployments(ray_serve: None) -> Iterator[list[Deployment]]:
    """Deployments made by a test, deleted afterwards even when it fails."""
    made: list[Deployment] = []
    yield made
    for deployment in made:
        deployment.delete()
