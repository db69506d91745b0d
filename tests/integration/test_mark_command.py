"""``zsad mark``: an operator's good/bad verdict from the shell, against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.cli.main import main
from services.local_stack.service_processes import RedisServer
from services.stores.operator_marks import marked_frames
from services.stores.result_store import FrameResult, ResultStore

pytestmark = pytest.mark.integration


def test_mark_records_the_verdict_and_refuses_frames_without_a_result(
    redis_server: RedisServer, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    camera = f"m{unique}"
    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump({
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {camera: {"method": "clip-ad", "class_name": "bottle", "threshold": 0.5}},
    }))  # fmt: skip
    with redis_server.client() as client:
        ResultStore(client).write_result(FrameResult(camera, "f1", score=0.2, threshold=0.5, method="clip-ad"))
        assert main(["mark", "--camera", camera, "--frame", "f1", "good", "--config", str(path)]) == 0
        assert marked_frames(client, camera, "good", 5) == ["f1"]
        assert main(["mark", "--camera", camera, "--frame", "f1", "bad", "--config", str(path)]) == 0
        assert marked_frames(client, camera, "good", 5) == [] and marked_frames(client, camera, "bad", 5) == ["f1"]
    assert f"frame f1 of {camera} marked bad" in capsys.readouterr().out
    assert main(["mark", "--camera", camera, "--frame", "nope", "good", "--config", str(path)]) == 2
    assert "has no stored result for frame 'nope'" in capsys.readouterr().err
