"""The suite's own guards (tests/conftest.py) fail what they promise to fail: a service started by a test without
the integration marker, an unmarked test under tests/integration, and a test past the time limit without a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = (Path(__file__).parents[2] / "conftest.py").read_text()


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A throw-away suite with our conftest, run in a child pytest (this test's own guards stay out of it).

    The child loads no installed plugin (hypothesis, anyio, xdist, timeout: 1.5 s of start-up each time); our
    conftest needs none of them.
    """
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts services\n    slow: real-size\n")
    return pytester


def test_a_service_started_without_the_integration_marker_fails(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_unit="""
        import pytest
        from services.local_stack.service_processes import RedisServer

        def test_starts_redis(tmp_path):
            RedisServer(data_dir=tmp_path).start()

        @pytest.mark.integration
        def test_marked_is_allowed_to_try():
            from services.local_stack.service_processes import LocalService
            assert LocalService.start.__name__ == "start"
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_starts_redis starts a service: mark it @pytest.mark.integration*"])


FAKE_RAY = """
    _started = False

    def init(**_kwargs):
        global _started
        _started = True

    def is_initialized():
        return _started

    def shutdown():
        global _started
        _started = False
        print("fake ray shut down")
"""


def test_ray_started_by_an_unmarked_test_fails(suite: pytest.Pytester) -> None:
    """Both ways in: ray imported before the test (``ray.init`` refuses) and after the guard's patches (the Ray
    left running is found, shut down and fails the test). A stand-in ``ray`` module in the child's directory keeps
    this in the fast loop; the real Ray start is test_a_real_ray_started_by_an_unmarked_test_fails below."""
    suite.makepyfile(ray=FAKE_RAY)
    suite.makepyfile(test_imported_first="""
        import ray

        def test_inits_ray_imported_before_the_test():
            ray.init(num_cpus=1)
    """)
    suite.makepyfile(test_unit="""
        def test_starts_ray():
            import sys
            sys.modules.pop("ray", None)  # imported only now, after the guard's patches
            import ray
            ray.init(num_cpus=1, include_dashboard=False)
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1, errors=1)  # test_starts_ray: its call passes, its teardown fails
    result.stdout.fnmatch_lines_random([
        "*test_inits_ray_imported_before_the_test starts a service: mark it @pytest.mark.integration*",
        "*ERROR at teardown of test_starts_ray*",
        "*test_starts_ray starts a service: mark it @pytest.mark.integration*",
        "*fake ray shut down*",
    ])


@pytest.mark.integration  # the child starts a real local Ray (about 15 s here)
def test_a_real_ray_started_by_an_unmarked_test_fails(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_unit="""
        def test_starts_ray():
            import ray
            ray.init(num_cpus=1, include_dashboard=False)
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*test_starts_ray starts a service: mark it @pytest.mark.integration*"])


def test_an_unmarked_file_under_integration_is_refused(suite: pytest.Pytester) -> None:
    (suite.path / "integration").mkdir()
    (suite.path / "integration" / "test_forgot.py").write_text("def test_x():\n    pass\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*integration tests without @pytest.mark.integration: integration/test_forgot.py*"])


def test_a_long_test_fails_unless_it_says_why(suite: pytest.Pytester) -> None:
    assert "LONG_TEST_S = 60.0" in CONFTEST  # cut to half a second below
    # The guard's import happens at conftest load, not inside the first test's set-up (which must stay short).
    suite.makeconftest(CONFTEST.replace("LONG_TEST_S = 60.0", "LONG_TEST_S = 0.5")
                       + "\nimport services.local_stack.service_processes  # noqa: E402, F401\n")
    suite.makepyfile(test_timing="""
        import time
        import pytest

        def test_quietly_long():
            time.sleep(1.0)

        @pytest.mark.takes_long(reason="waits on purpose")
        def test_long_with_a_reason():
            time.sleep(1.0)
    """)
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*test_quietly_long: call took * s, over the suite's * s per test*"])
