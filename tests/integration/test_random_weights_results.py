"""Frames scored on random CLIP weights say so in the stored result and in ``zsad results``, against real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from services.cli.main import main
from services.config import ZsadConfig
from services.frame_path.decoding import FrameRequest
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.stores.result_store import ResultStore

pytestmark = pytest.mark.integration


def test_a_random_weight_result_is_marked_and_results_warns(
    redis_server: RedisServer, unique: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    camera = f"r{unique}"
    settings = {
        "redis": {"url": redis_server.url, "password": redis_server.password},
        "cameras": {camera: {"method": "clip-ad", "class_name": "object", "threshold": 0.5, "image_size": 64}},
        "serving": {"backbone": "zsad-tiny-vit", "pretrained": False},
    }
    store = ResultStore(redis_server.client())
    core = InspectorCore(ZsadConfig(**settings), store)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert core.process([FrameRequest(camera, "f1", capture_ts=1.0e9, partition=0, offset=0, image=image)])
    stored = store.get_result(camera, "f1")
    assert stored is not None and stored.weights == "random"

    path = tmp_path / "zsad.yaml"
    path.write_text(yaml.safe_dump(settings))
    assert main(["results", "--camera", camera, "--json", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0]["weights"] == "random"
    assert "1 of these 1 frames were scored with RANDOM CLIP weights" in captured.err
