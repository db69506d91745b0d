"""Shared fixtures: a tiny random-weight CLIP built once per session (a few hundred ms).

Nothing heavy is imported at module level: torch and zsad_core (several seconds on the 2-core machine) only in the
fixtures that need them, so that the child pytest of tests/unit/structure/test_suite_guards.py, which runs this
file as its conftest, starts in about a second.
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

# Nothing in the suite may reach for a model hub: no network exists on CI, and retries would cost minutes.
os.environ.setdefault("ZSAD_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# A Ray temporary directory of this process's own: Ray finds "the latest cluster" through it, and with two
# workers of `make test` (or two suites on one machine) a process that joins by address "auto" or none must find
# the cluster of its own worker, never another's (which it could stop). Short: Ray's socket paths must stay under
# the 107 characters of a Unix socket name.
RAY_TMPDIR = os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="zr-", dir="/tmp")

import pytest

if TYPE_CHECKING:
    import torch

    from zsad_core.backbone import ClipBackbone


@pytest.fixture(scope="session", autouse=True)
def _state_home(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every test's state home (local stack, relative registry paths) is temporary, never the user's own."""
    os.environ["ZSAD_HOME"] = str(tmp_path_factory.mktemp("zsad-home"))


@pytest.fixture(scope="session")
def tiny_backbone() -> ClipBackbone:
    """A 4-block ViT (width 96, 3 heads, 64 px, 4x4 patches) with a 2-layer text tower, seeded."""
    import torch

    from zsad_core.backbone import TINY_ARCH, build_backbone

    torch.manual_seed(0)
    return build_backbone(TINY_ARCH)


@pytest.fixture
def tiny_pixels(tiny_backbone: ClipBackbone) -> torch.Tensor:
    """Two random normalised images at the tiny backbone's size."""
    import torch

    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, tiny_backbone.image_size, tiny_backbone.image_size, generator=generator)


# --- The suite's guards (docs/testing.md): accurate markers, and no test that quietly grows past a minute. ---

LONG_TEST_S = 60.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "takes_long(reason): the test may run past 60 s; the reason says why it needs that long")
    config.addinivalue_line(
        "markers", "queue_early(reason): the file's tests take over half a minute in all; `make test` starts it "
        "before the other integration files")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check the markers, then run the longest files first.

    Everything under tests/integration starts services, so it must say so (``make test-fast`` selects by marker).
    ``make test`` hands whole files to its workers in collection order (``tests/scheduling.py``): files with a test
    that takes long go first, then those marked ``queue_early``, then the other integration files, then the unit
    tests, so that no long file starts last and runs alone.
    """
    unmarked = [item.nodeid for item in items
                if "/integration/" in f"/{item.nodeid}" and item.get_closest_marker("integration") is None]
    if unmarked:
        raise pytest.UsageError("integration tests without @pytest.mark.integration: " + ", ".join(unmarked))
    long_files = {item.path for item in items if item.get_closest_marker("takes_long") is not None}
    early_files = {item.path for item in items if item.get_closest_marker("queue_early") is not None}
    service_files = {item.path for item in items if item.get_closest_marker("integration") is not None}
    items.sort(key=lambda item: (item.path not in long_files, item.path not in early_files,
                                 item.path not in service_files))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile`` with a lane: with three workers the last one runs only the files that start no Ray (the
    gateway's, then tests/unit; see ``tests/scheduling.py``), beside the two that run the other integration files."""
    if config.getvalue("dist") != "loadfile":
        return None
    from tests.scheduling import LaneScheduling

    return LaneScheduling(config, log)


LOWEST_PRIORITY = 19


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A worker of ``make test`` drops to the lowest priority at its first test that starts no service.

    So the lane (``tests/scheduling.py``) and the workers that reach the unit tests at the end take the CPU
    that the integration tests leave idle, not the CPU they wait for: an integration test's timing (a replica's
    health check, a node declared dead) depends on getting the CPU when it asks. Threads and processes started
    afterwards inherit the priority. A worker at low priority has only tests/unit left (the integration files are
    queued first, and the lane takes the gateway's before its unit files); the few integration tests there start
    their services in a child pytest.
    """
    if (os.environ.get("PYTEST_XDIST_WORKER") and item.get_closest_marker("integration") is None
            and os.getpriority(os.PRIO_PROCESS, 0) < LOWEST_PRIORITY):
        os.setpriority(os.PRIO_PROCESS, 0, LOWEST_PRIORITY)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove this process's Ray directory after a run that passed: its clusters' logs, about 12 MB, and every
    process of ``make test`` has one. After a failure it stays, for the logs."""
    if exitstatus == 0:
        shutil.rmtree(RAY_TMPDIR, ignore_errors=True)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Keep the cyclic garbage collector off everything imported so far (torch, open_clip, scipy, Ray: about
    600,000 objects).

    Each full collection walks every tracked object: about 0.4 s here, and a worker of ``make test-fast`` ran 15 to 20
    of them. Frozen, those objects are never walked again; what the tests create is collected as before.
    """
    gc.freeze()


_threads_before_small_tests: list[int] = []  # torch's thread count before the first small test took it to one


@pytest.fixture(autouse=True)
def _one_torch_thread_in_small_tests(request: pytest.FixtureRequest) -> None:
    """Small tests (neither ``integration`` nor ``slow``) run torch on one thread.

    The tiny model's tensors gain nothing from intra-op threads, and on the shared 2-core machine contending
    threads spin: tests/unit/{core,cli,report,few_shot} cost 84 s of CPU serially with torch's default (2 threads)
    and 26 s with one, and 56 s against 34 s under ``-n 2``. The count is changed only when the kind of test
    changes, and given back before the next real-size or integration test.
    """
    torch = sys.modules.get("torch")  # test modules import it at collection; none is imported here for it
    if torch is None:
        return
    small = request.node.get_closest_marker("integration") is None and request.node.get_closest_marker("slow") is None
    if small and not _threads_before_small_tests:
        _threads_before_small_tests.append(torch.get_num_threads())
        torch.set_num_threads(1)
    elif not small and _threads_before_small_tests:
        torch.set_num_threads(_threads_before_small_tests.pop())


class ServiceStartedOutsideIntegrationError(AssertionError):
    """A test without the integration marker tried to start Redis, a broker, Prometheus, Ray or Serve."""


@pytest.fixture(autouse=True)
def _services_only_in_integration_tests(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Make a started service fail a test that is not marked ``integration``, so the fast loop never starts one."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    from services.local_stack.service_processes import LocalService  # imported once, here: keeps the child cheap

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise ServiceStartedOutsideIntegrationError(
            f"{request.node.nodeid} starts a service: mark it @pytest.mark.integration (docs/testing.md)")

    def ray_running() -> bool:
        ray = sys.modules.get("ray")
        return ray is not None and ray.is_initialized()

    # A worker of `make test` that ran integration files before keeps their session's Ray: not this test's.
    ray_before = ray_running()
    monkeypatch.setattr(LocalService, "start", refuse)
    for module, name in (("ray", "init"), ("ray.serve", "start"), ("ray.serve", "run")):
        target = sys.modules.get(module)
        if target is not None:
            monkeypatch.setattr(target, name, refuse)
    yield
    if not ray_before and ray_running():  # Ray imported by the test itself after the patches above
        sys.modules["ray"].shutdown()
        refuse()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Fail a phase of a test that took over a minute unless the test says why it needs that long."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.passed and call.duration > LONG_TEST_S and item.get_closest_marker("takes_long") is None:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid}: {report.when} took {call.duration:.0f} s, over the suite's "
                           f"{LONG_TEST_S:.0f} s per test; make it faster or mark it "
                           "@pytest.mark.takes_long(reason=...) (docs/testing.md)")
