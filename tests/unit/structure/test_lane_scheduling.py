"""``make test``'s scheduling (tests/scheduling.py): the last of three workers runs only the files that start no Ray
(the gateway's, then tests/unit), and the others run the queue in order; driven through xdist's scheduler protocol
with stand-in workers, as xdist tests its own."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.scheduling import LaneScheduling

pytest_plugins = ["pytester"]

# In the order tests/conftest.py queues them: integration files first, then unit files.
COLLECTION = [
    *(f"tests/integration/test_stack_{number}.py::test_{name}" for number in range(3) for name in ("up", "down")),
    "tests/integration/gateway/test_folder.py::test_sent_once",
    *(f"tests/integration/test_view_{number}.py::test_{name}" for number in range(3) for name in ("up", "down")),
    "tests/unit/test_metrics.py::test_auroc",
    "tests/unit/test_metrics.py::test_pro",
    "tests/unit/test_metrics.py::test_pixel_pro",
    "tests/unit/test_config.py::test_defaults",
    "tests/unit/test_cli.py::test_help",
]
GATEWAY_FILE = "tests/integration/gateway/test_folder.py"
UNIT_FILES = {"tests/unit/test_metrics.py", "tests/unit/test_config.py", "tests/unit/test_cli.py"}


@dataclass(eq=False)
class _Gateway:
    id: str


@dataclass(eq=False)
class StandInWorker:
    """What the scheduler uses of xdist's ``WorkerController``: its id, the tests it was sent, its shutdown."""

    gateway: _Gateway
    sent: list[str] = field(default_factory=list)
    shutting_down: bool = False

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(COLLECTION[index] for index in indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduled(pytester: pytest.Pytester, workers: int) -> tuple[LaneScheduling, list[StandInWorker]]:
    config = pytester.parseconfig(f"--tx={workers}*popen", "--no-loadscope-reorder")
    scheduling = LaneScheduling(config)
    nodes = [StandInWorker(_Gateway(f"gw{number}")) for number in reversed(range(workers))]  # any order
    for node in nodes:
        scheduling.add_node(node)
    for node in nodes:
        scheduling.add_node_collection(node, COLLECTION)
    scheduling.schedule()
    return scheduling, sorted(nodes, key=lambda node: node.gateway.id)


def _finish(scheduling: LaneScheduling, node: StandInWorker) -> None:
    """The worker runs every test it holds, reporting each as xdist's does."""
    done = 0
    while done < len(node.sent):
        scheduling.mark_test_complete(node, COLLECTION.index(node.sent[done]))
        done += 1


def _files(node: StandInWorker) -> set[str]:
    return {test.split("::")[0] for test in node.sent}


def test_the_last_of_three_workers_runs_the_gateway_then_the_unit_files_and_stops_when_none_is_left(
    pytester: pytest.Pytester,
) -> None:
    scheduling, (first, second, lane) = _scheduled(pytester, 3)
    # The gateway's file first, though other integration files are queued before it; then the first unit file.
    assert lane.sent[0].split("::")[0] == GATEWAY_FILE and _files(lane) <= {GATEWAY_FILE, "tests/unit/test_metrics.py"}
    assert all(test.startswith("tests/integration/") and GATEWAY_FILE not in test for test in first.sent + second.sent)

    _finish(scheduling, lane)  # it takes the other unit files, then has nothing left to take
    assert _files(lane) == {GATEWAY_FILE} | UNIT_FILES and lane.shutting_down
    assert not first.shutting_down and not second.shutting_down  # integration files are still queued

    for node in (first, second):
        _finish(scheduling, node)
    assert sorted(first.sent + second.sent + lane.sent) == sorted(COLLECTION)  # each test sent once
    assert scheduling.tests_finished


def test_the_other_workers_take_the_unit_files_left_after_the_integration_files(pytester: pytest.Pytester) -> None:
    scheduling, (first, second, lane) = _scheduled(pytester, 3)
    _finish(scheduling, first)  # the lane is still at its first file
    assert first.sent[0].startswith("tests/integration/") and _files(first) & UNIT_FILES
    assert first.sent == sorted(first.sent, key=COLLECTION.index)  # in queue order
    for node in (second, lane):
        _finish(scheduling, node)
    assert sorted(first.sent + second.sent + lane.sent) == sorted(COLLECTION)
    assert all(test.startswith(("tests/unit/", GATEWAY_FILE)) for test in lane.sent)


def test_with_two_workers_both_take_the_queue_in_order(pytester: pytest.Pytester) -> None:
    scheduling, (first, second) = _scheduled(pytester, 2)
    assert first.sent[0].startswith("tests/integration/") and second.sent[0].startswith("tests/integration/")
    _finish(scheduling, first)
    _finish(scheduling, second)
    assert sorted(first.sent + second.sent) == sorted(COLLECTION)


def test_a_worker_drops_to_the_lowest_priority_at_its_first_test_that_starts_no_service(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run in a child pytest with our conftest, as a worker of ``make test`` (``PYTEST_XDIST_WORKER``)."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    pytester.makeconftest((Path(__file__).parents[2] / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts services\n    slow: real-size\n")
    started_with = os.getpriority(os.PRIO_PROCESS, 0)  # 19 when this test itself runs in a worker of `make test`
    pytester.makepyfile(test_order=f"""
        import os
        import pytest

        @pytest.mark.integration
        def test_services_first_at_the_priority_it_started_with():
            assert os.getpriority(os.PRIO_PROCESS, 0) == {started_with}

        def test_then_one_that_starts_nothing():
            assert os.getpriority(os.PRIO_PROCESS, 0) == 19
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_gateway_test_that_asks_for_a_ray_fails_before_it_starts_one(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lane runs the gateway's files: tests/integration/gateway/conftest.py keeps Ray out of them."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest((Path(__file__).parents[2] / "integration" / "gateway" / "conftest.py").read_text())
    pytester.makepyfile(test_gateway="""
        import pytest

        @pytest.fixture
        def local_ray():
            raise AssertionError("a Ray was started")

        def test_asks_for_ray(local_ray):
            pass

        def test_asks_for_nothing():
            pass
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    # "?" where the message has brackets: fnmatch reads [ ] as a set of characters.
    result.stdout.fnmatch_lines(["*test_asks_for_ray asks for ?'local_ray'?: the gateway's tests start no Ray*"])
    result.stdout.no_fnmatch_line("*a Ray was started*")
