"""Reference memory: nearest-neighbour distances against brute force, the k-center coreset, serialisation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from zsad_core.backbone import TINY_ARCH, build_backbone
from zsad_core.few_shot import (
    IncompatibleReferencesError,
    MemoryOptions,
    build_memory,
    greedy_k_center,
    load_memory,
    nearest_distances,
    save_memory,
)
from zsad_core.few_shot.memory import MEMORY_FILE, patch_tokens


def _brute_force(queries: np.ndarray, bank: np.ndarray, distance: str) -> np.ndarray:
    """One query at a time, every bank row, float64: the definition, not the implementation."""
    out = []
    for query in queries.astype(np.float64):
        best = math.inf
        for row in bank.astype(np.float64):
            if distance == "cosine":
                cos = query @ row / (np.linalg.norm(query) * np.linalg.norm(row))
                value = (1.0 - cos) / 2.0
            else:
                value = float(np.sqrt(((query - row) ** 2).sum()))
            best = min(best, value)
        out.append(best)
    return np.array(out)


@pytest.mark.parametrize("distance", ["cosine", "l2"])
def test_nearest_distances_match_brute_force(distance):
    generator = torch.Generator().manual_seed(0)
    queries, bank = torch.randn(37, 6, generator=generator), torch.randn(23, 6, generator=generator)
    stored = torch.nn.functional.normalize(bank, dim=-1) if distance == "cosine" else bank
    expected = _brute_force(queries.numpy(), bank.numpy(), distance)
    np.testing.assert_allclose(nearest_distances(queries, stored, distance).numpy(), expected, atol=1e-5)


def test_nearest_distances_are_the_same_across_query_blocks():
    # 5000 bank rows make a block of 3355 queries, so 4000 queries are answered in two blocks.
    generator = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(4000, 4, generator=generator), torch.randn(5000, 4, generator=generator)
    expected = torch.cdist(queries.double(), bank.double()).amin(-1)
    torch.testing.assert_close(nearest_distances(queries, bank, "l2").double(), expected, atol=1e-4, rtol=0)


def test_distance_map_of_a_tiny_backbone_matches_brute_force(tiny_backbone, tiny_pixels):
    references = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    memory = build_memory(tiny_backbone, references, taps=(2, 4), options=MemoryOptions(distance="cosine"))
    assert memory.taps == (2, 4) and memory.shots == 3 and memory.patches == 3 * 16
    with torch.inference_mode():
        reference_tokens = tiny_backbone.encode_image(references, (2, 4), need_global=False).raw
        test_tokens = tiny_backbone.encode_image(tiny_pixels, (2, 4), need_global=False).raw
        tokens, grid = patch_tokens(tiny_backbone, tiny_pixels, (2, 4), "raw")
        distance_map = memory.distance_map(tokens, grid)
    per_tap = [
        _brute_force(test_tokens[tap][:, 1:].reshape(-1, 96).numpy(),
                     reference_tokens[tap][:, 1:].reshape(-1, 96).numpy(), "cosine")
        for tap in (2, 4)
    ]
    expected = np.mean(per_tap, axis=0).reshape(2, 4, 4)
    assert distance_map.shape == (2, 4, 4)
    np.testing.assert_allclose(distance_map.numpy(), expected, atol=1e-5)


def test_a_reference_image_is_at_distance_zero_from_the_memory(tiny_backbone, tiny_pixels):
    memory = build_memory(tiny_backbone, tiny_pixels, taps=(4,))
    with torch.inference_mode():
        tokens, grid = patch_tokens(tiny_backbone, tiny_pixels[:1], (4,), "raw")
        assert memory.distance_map(tokens, grid).abs().max() < 1e-6


def test_greedy_k_center_keeps_every_dropped_point_within_the_radius():
    points = torch.randn(300, 5, generator=torch.Generator().manual_seed(3))
    coreset = greedy_k_center(points, 40)
    kept = coreset.indices
    assert len(set(kept.tolist())) == 40
    to_kept = torch.cdist(points.double(), points[kept].double()).amin(-1)
    assert math.isclose(float(to_kept.max()), coreset.radius, rel_tol=1e-5)
    dropped = torch.ones(300, dtype=torch.bool)
    dropped[kept] = False
    assert (to_kept[dropped] <= coreset.radius + 1e-6).all()
    # Greedy: every pick after the first is the point farthest from the points picked before it.
    for step in range(1, 40):
        previous = torch.cdist(points.double(), points[kept[:step]].double()).amin(-1)
        assert math.isclose(float(previous[kept[step]]), float(previous.max()), rel_tol=1e-6)


def test_greedy_k_center_keeps_all_points_when_the_bound_is_not_reached():
    points = torch.randn(10, 3)
    coreset = greedy_k_center(points, 10)
    assert coreset.indices.tolist() == list(range(10)) and coreset.radius == 0.0
    with pytest.raises(ValueError, match="count"):
        greedy_k_center(points, 0)


def test_memory_above_the_bound_is_a_coreset_of_the_full_memory(tiny_backbone):
    references = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    full = build_memory(tiny_backbone, references, taps=(3, 4))
    bounded = build_memory(tiny_backbone, references, taps=(3, 4), options=MemoryOptions(max_patches=20))
    assert full.patches == 64 and bounded.patches == 20 and bounded.source_patches == 64
    assert bounded.nbytes == 20 * 96 * 2 * 4
    # Every kept row is exactly a row of the full memory, and at both taps the same patch positions are kept.
    positions = []
    for tap in (3, 4):
        equal = (bounded.features[tap][:, None] == full.features[tap][None]).all(-1)
        assert (equal.sum(-1) == 1).all()
        positions.append(equal.float().argmax(-1).tolist())
    assert positions[0] == positions[1]
    assert bounded.coreset_radius > 0


def test_serialisation_round_trip_is_bit_exact(tiny_backbone, tmp_path):
    references = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    memory = build_memory(tiny_backbone, references, taps=(1, 4), options=MemoryOptions(distance="l2"),
                          class_name="disc")
    save_memory(memory, tmp_path / "mem", extra={"camera": "cam1"})
    loaded = load_memory(tmp_path / "mem", tiny_backbone, taps=(1, 4))
    assert loaded.describe() == memory.describe() and loaded.extra == {"camera": "cam1"}
    for tap in (1, 4):
        assert torch.equal(loaded.features[tap], memory.features[tap])
    with pytest.raises(FileExistsError):
        save_memory(memory, tmp_path / "mem")


def test_loading_refuses_another_backbone_size_taps_or_a_changed_file(tiny_backbone, tmp_path):
    memory = build_memory(tiny_backbone, torch.randn(1, 3, 64, 64), taps=(4,))
    save_memory(memory, tmp_path / "mem")
    larger = build_backbone(TINY_ARCH, image_size=96)
    with pytest.raises(IncompatibleReferencesError, match="image_size: memory 64 != model 96") as error:
        load_memory(tmp_path / "mem", larger)
    assert error.value.reason == "incompatible_references"
    with pytest.raises(IncompatibleReferencesError, match="taps"):
        load_memory(tmp_path / "mem", tiny_backbone, taps=(2, 4))

    manifest_path = tmp_path / "mem" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["backbone"] = "ViT-B-16@64"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(IncompatibleReferencesError, match="backbone: memory 'ViT-B-16@64'"):
        load_memory(tmp_path / "mem", tiny_backbone)

    save_memory(memory, tmp_path / "other")
    tensors = tmp_path / "other" / MEMORY_FILE
    tensors.write_bytes(tensors.read_bytes()[:-4] + b"\x00\x00\x00\x01")
    with pytest.raises(IncompatibleReferencesError, match="sha256"):
        load_memory(tmp_path / "other", tiny_backbone)
