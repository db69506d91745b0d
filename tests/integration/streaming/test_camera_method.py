"""One builder of a camera's method: calibration, a reference-set build and a replica score one frame alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.config import ZsadConfig
from services.decisions.calibration import CameraScorer, serving_artifacts
from services.frame_path.decoding import FrameRequest
from services.frame_path.inspector import InspectorCore
from services.local_stack.service_processes import RedisServer
from services.prompt_lifecycle.hot_swap import RegistryPrompts, RegistryReferences
from services.prompt_lifecycle.reference_sets import build_reference_set, images_from_folder
from services.stores.artifact_registry import ArtifactRegistry, reference_registry
from services.stores.camera_settings import CameraSettingsStore
from services.stores.result_store import ResultStore
from zsad_core.artifacts import save_prompts
from zsad_core.few_shot import MemoryOptions
from zsad_core.imageio import decode_image, decode_model_input, encode_png, plan_model_input
from zsad_core.methods import load_method
from zsad_core.preprocess import preprocess

pytestmark = pytest.mark.integration
METHOD = "clip-ad+"
ROI = (8, 4, 80, 72)
SIDE = 64


def test_calibration_a_reference_build_and_a_replica_score_a_frame_alike(
    redis_server: RedisServer, tmp_path: Path, unique: str
) -> None:
    camera = f"cam{unique}"
    config = ZsadConfig(
        redis={"url": redis_server.url, "password": redis_server.password},
        cameras={camera: {"method": METHOD, "class_name": "object", "threshold": 0.5, "image_size": SIDE,
                          "roi": list(ROI), "prompt_version": "champion", "references": "champion"}},
        serving={"backbone": "zsad-tiny-vit", "pretrained": False},
        registry={"root": str(tmp_path / "registry"), "namespace": f"test:{unique}:registry"},
    )  # fmt: skip
    client = redis_server.client()
    prompts = ArtifactRegistry.from_config(config.registry, client)
    trained = load_method(METHOD, backbone="zsad-tiny-vit", pretrained=False, image_size=SIDE)
    with torch.no_grad():
        for parameter in trained.trainable_parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    version = prompts.register(save_prompts(trained, tmp_path / "prompts", {"training_data": "x"}), created_by="t")
    prompts.promote(METHOD, version.version, actor="test", reason="first")

    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    png = encode_png(frame)
    (tmp_path / "goods").mkdir()
    (tmp_path / "goods" / "frame.png").write_bytes(png)
    references = reference_registry(config, client)
    entry = build_reference_set(config, camera, images_from_folder(tmp_path / "goods"), references,
                                options=MemoryOptions(), actor="test")  # fmt: skip
    references.promote(camera, entry.version, actor="test", reason="first")

    torch.manual_seed(1234)
    caller_rng = torch.get_rng_state()
    core = InspectorCore(config, ResultStore(client), prompts=RegistryPrompts(prompts),
                         references=RegistryReferences(references))  # fmt: skip
    assert torch.equal(torch.get_rng_state(), caller_rng)  # building a replica leaves the process's RNG alone
    as_ingest = decode_model_input(png, plan_model_input("PNG", 96, 96, SIDE, ROI))
    request = FrameRequest(camera, "f1", capture_ts=1.0e9, partition=0, offset=0, image=as_ingest)
    (served,) = core.process([request])
    assert (served.prompt_version, core.store.get_result(camera, "f1").reference_version) == (version.version, "r1")

    store = CameraSettingsStore(prompts, config)
    resolved_prompts, resolved_references = serving_artifacts(store, camera, "champion")
    scorer = CameraScorer(config, camera, roi=ROI, prompt_version="champion", prompts=resolved_prompts,
                          references=resolved_references)  # fmt: skip
    calibrated, _ = scorer.score([decode_image(png)])
    assert calibrated[0] == pytest.approx(served.score, abs=1e-6)

    # The reference build encoded the pixels the replica sees with the replica's backbone: the frame is its own
    # nearest neighbour, at distance zero on every patch.
    fused = core.methods[core.camera_keys[camera]].module
    pixels, _ = preprocess([as_ingest], fused.backbone.preprocess_config())
    with torch.inference_mode():
        assert float(fused.few_shot_map(pixels).abs().max()) == pytest.approx(0.0, abs=1e-5)
