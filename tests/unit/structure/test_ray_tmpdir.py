"""Each test process's Ray directory (tests/conftest.py) goes when its run passed and stays, with the clusters'
logs, when it failed; checked in child pytests with our conftest."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.parametrize(("outcome", "kept"), [("pass", False), ("fail", True)])
def test_the_ray_directory_is_removed_after_a_passing_run_only(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, outcome: str, kept: bool
) -> None:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeconftest((Path(__file__).parents[2] / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    integration: starts services\n    slow: real-size\n")
    pytester.makepyfile(test_writes_a_log=f"""
        import os
        from pathlib import Path

        def test_writes_a_log():
            ray_dir = Path(os.environ["RAY_TMPDIR"])
            (ray_dir / "session.log").write_text("a cluster's log")
            Path("ray_dir.txt").write_text(str(ray_dir))
            assert {outcome!r} == "pass"
    """)
    pytester.runpytest_subprocess("-p", "no:cacheprovider")
    ray_dir = Path((pytester.path / "ray_dir.txt").read_text())
    assert ray_dir.name.startswith("zr-") and ray_dir.exists() == kept
    if kept:
        assert (ray_dir / "session.log").read_text() == "a cluster's log"
        (ray_dir / "session.log").unlink()
        ray_dir.rmdir()
