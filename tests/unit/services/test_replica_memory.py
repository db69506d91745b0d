"""What a replica holds per camera: the backbone once, a method per distinct camera set-up, nothing for set-ups no
camera uses any more."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
import torch

from services.config import ZsadConfig
from services.frame_path.camera_method import ResolvedPrompts, ResolvedReferences
from services.frame_path.inspector import InspectorCore
from services.stores.camera_settings import CameraSettings
from services.stores.result_store import ResultStore
from zsad_core.artifacts import save_prompts
from zsad_core.backbone import ClipBackbone
from zsad_core.few_shot.memory import build_memory, save_memory
from zsad_core.methods import load_method

METHOD = "clip-ad+"


class Artifacts:
    """Prompt versions and reference sets as the registries resolve them, from folders written here."""

    def __init__(self) -> None:
        self.prompts: dict[str, Path] = {}
        self.references: dict[str, ResolvedReferences] = {}

    def resolve_prompts(self, method: str, version_or_alias: str) -> ResolvedPrompts:
        return ResolvedPrompts(version_or_alias, self.prompts[version_or_alias])

    def resolve_references(self, camera: str, version_or_alias: str) -> ResolvedReferences | None:
        return self.references.get(camera)


@pytest.fixture
def core(tmp_path: Path) -> tuple[InspectorCore, Artifacts]:
    config = ZsadConfig(
        redis={"url": "redis://127.0.0.1:1/0"},  # never contacted: nothing is scored
        cameras={**{name: {"method": METHOD, "class_name": "screw", "threshold": 0.5, "image_size": 64}
                    for name in ("cam1", "cam2")},
                 "cam3": {"method": METHOD, "class_name": "screw", "threshold": 0.5, "image_size": 64,
                          "references": "champion"}},
        serving={"backbone": "zsad-tiny-vit"},
    )  # fmt: skip
    artifacts = Artifacts()
    store = ResultStore(redis.Redis(port=1))
    return InspectorCore(config, store, prompts=artifacts, references=artifacts), artifacts


def _entries(core: InspectorCore) -> list[dict]:
    return core.describe()["memory"]["methods"]


def test_the_backbone_counts_once_and_cameras_on_one_product_share_one_entry(
    core: tuple[InspectorCore, Artifacts], tiny_backbone: ClipBackbone
) -> None:
    inspector, _ = core
    memory = inspector.describe()["memory"]
    weights = sum(t.numel() * t.element_size() for t in (*tiny_backbone.parameters(), *tiny_backbone.buffers()))
    assert memory["backbones"] == {"zsad-tiny-vit@64": weights}
    shared, alone = sorted(memory["methods"], key=lambda entry: -entry["cameras"])
    assert (shared["cameras"], alone["cameras"]) == (2, 1)  # cam3 follows a reference alias: its own entry
    assert shared["bytes"] == alone["bytes"] > 0  # no set promoted yet: the same text features and prompts
    method = inspector.methods[inspector.camera_keys["cam1"]].module
    assert shared["bytes"] == sum(p.numel() * p.element_size() for p in (*method.parameters(), *method.buffers()))
    assert memory["methods_bytes"] == shared["bytes"] + alone["bytes"]
    assert memory["per_camera_bytes"] == pytest.approx(memory["methods_bytes"] / 3)


def test_a_reference_set_adds_its_memory_to_its_cameras_entry(
    core: tuple[InspectorCore, Artifacts], tiny_backbone: ClipBackbone, tmp_path: Path
) -> None:
    inspector, artifacts = core
    before = {entry["reference_version"]: entry["bytes"] for entry in _entries(inspector)}
    images = [np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8) for seed in range(3)]
    bank = build_memory(tiny_backbone, images, taps=(2, 4))
    artifacts.references["cam3"] = ResolvedReferences("r1", save_memory(bank, tmp_path / "r1"))
    assert [swap.new_version for swap in inspector.refresh_references()] == ["r1"]
    after = {entry["reference_version"]: entry for entry in _entries(inspector)}
    assert after["r1"]["cameras"] == 1 and after[None]["cameras"] == 2
    assert after["r1"]["bytes"] == before[None] + bank.nbytes
    assert after[None]["bytes"] == before[None]


def test_an_entry_no_camera_uses_after_a_prompt_swap_is_evicted(
    core: tuple[InspectorCore, Artifacts], tmp_path: Path
) -> None:
    inspector, artifacts = core
    trained = load_method(METHOD, backbone="zsad-tiny-vit", pretrained=False, image_size=64)
    with torch.no_grad():
        for parameter in trained.trainable_parameters():
            parameter.add_(1.0)
    artifacts.prompts["v1"] = save_prompts(trained, tmp_path / "v1")
    zero_shot = inspector.camera_keys["cam1"]
    inspector._last_scored[zero_shot] = np.zeros((64, 64, 3), np.uint8)  # as a scored batch leaves it
    inspector.apply_settings(CameraSettings("cam1", "s1", 0.5, prompt_version="v1"))
    zero_shot_entries = {(e["prompt_version"], e["cameras"]) for e in _entries(inspector) if not e["reference_version"]}
    assert zero_shot_entries == {(None, 1), ("v1", 1)}  # cam3 follows a reference alias: an entry of its own
    inspector.apply_settings(CameraSettings("cam2", "s1", 0.5, prompt_version="v1"))
    entries = [(e["prompt_version"], e["cameras"]) for e in _entries(inspector)]
    assert sorted(entries, key=str) == [("v1", 2), (None, 1)]  # cam3's stays, the shared zero-shot one is gone
    assert zero_shot not in inspector.methods and zero_shot not in inspector._last_scored
