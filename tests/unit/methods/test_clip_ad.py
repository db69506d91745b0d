"""CLIP-AD SDP / SDP+ on the tiny backbone, and its formulas against independent computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter
from sklearn.cluster import DBSCAN
from sklearn.neighbors import KernelDensity

import zsad_core.methods.clip_ad  # noqa: F401  (registers clip-ad and clip-ad+)
from zsad_core.artifacts import load_prompts, save_prompts
from zsad_core.backbone import SurgeryConfig, build_backbone
from zsad_core.errors import IncompatibleWeightsError
from zsad_core.methods import load_method
from zsad_core.methods.clip_ad import feature_surgery, representative_vector
from zsad_core.methods.clip_ad.rvs import TEMPLATES, dbscan_labels

NAMES = ("clip-ad", "clip-ad+")


@pytest.fixture(scope="module")
def methods(tiny_backbone):
    """Both methods, set up once for the module (the text ensemble is the slow part)."""
    return {name: load_method(name, backbone=tiny_backbone, class_name="bottle") for name in NAMES}


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=-1)


# -- 1. outputs --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_outputs_shapes_and_documented_range(methods, tiny_pixels, name):
    method = methods[name]
    result = method.predict(tiny_pixels)
    size, taps = method.image_size, len(method.taps)
    assert result.maps.shape == (2, size, size) and result.scores.shape == (2,)
    assert result.maps.dtype == torch.float32 and result.scores.dtype == torch.float32
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.scores).all()
    upper = taps if name == "clip-ad" else 2 * taps  # SDP+ adds Σ_l probabilities in [0, 1]
    assert result.maps.min() >= -taps and result.maps.max() <= upper
    assert (result.scores >= -taps).all() and (result.scores <= upper + 1).all()
    terms = method.score_terms(tiny_pixels)
    torch.testing.assert_close(terms.sum(1), result.scores)
    assert ((terms[:, 0] > 0) & (terms[:, 0] < 1)).all()
    torch.testing.assert_close(terms[:, 1], result.maps.flatten(1).amax(1))


@pytest.mark.parametrize("name", NAMES)
def test_predict_accepts_uint8_rgb_arrays(methods, name):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)]
    result = methods[name].predict(images)
    assert result.maps.shape == (2, 64, 64) and torch.isfinite(result.maps).all()


def test_load_method_defaults_and_overrides(tiny_backbone):
    method = load_method("clip-ad", backbone=tiny_backbone, rep_vec="mean", sigma=2.0)
    assert method.config.rep_vec == "mean" and method.config.sigma == 2.0
    assert method.surgery == SurgeryConfig(start_block=1, init="zero", reset_every=1)  # 4 blocks: L // 4
    assert method.state_dict() == {}
    with pytest.raises(ValueError, match="rep_vec"):
        load_method("clip-ad", backbone=tiny_backbone, rep_vec="median")


# -- 2. batch invariance -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance(methods, tiny_pixels, name):
    method = methods[name]
    batch = method.predict(tiny_pixels)
    for index in range(tiny_pixels.shape[0]):
        alone = method.predict(tiny_pixels[index : index + 1])
        torch.testing.assert_close(alone.maps[0], batch.maps[index], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alone.scores[0], batch.scores[index], atol=1e-5, rtol=1e-5)


# -- 3. formulas -------------------------------------------------------------------------------------------------
def test_feature_surgery_matches_elementwise_definition_and_two_class_closed_form():
    generator = torch.Generator().manual_seed(0)
    tokens = _unit(torch.randn(3, 1 + 9, 16, generator=generator))
    text = _unit(torch.randn(2, 16, generator=generator))
    got = feature_surgery(tokens, text)
    # the official's definition, with its (B, L, C, D) intermediate
    p = (tokens[:, :1] @ text.T).softmax(-1)
    w = p / p.mean(-1, keepdim=True)  # (B, 1, C)
    e = tokens[:, :, None, :] * text[None, None] * w[..., None]  # (B, L, C, D)
    torch.testing.assert_close(got, (e - e.mean(2, keepdim=True)).sum(-1))
    # two classes: sim_abn = ½ (w_a ⟨F, t_a⟩ − w_n ⟨F, t_n⟩)
    cos = tokens @ text.T
    closed = 0.5 * (w[..., 1] * cos[..., 1] - w[..., 0] * cos[..., 0])
    torch.testing.assert_close(got[..., 1], closed)
    torch.testing.assert_close(got[..., 0], -closed)


def test_sdp_map_and_score_match_manual_pipeline(methods, tiny_backbone, tiny_pixels):
    method = methods["clip-ad"]
    taps, text, grid, size = method.taps, method.text_features.double(), tiny_backbone.grid, method.image_size
    surgery = SurgeryConfig(start_block=1, init="zero", reset_every=1)
    with torch.inference_mode():
        features = tiny_backbone.encode_image(tiny_pixels, taps, surgery=surgery)
        result = method.predict(tiny_pixels)
    total = 0
    for tap in taps:
        tokens = _unit(features.vv_projected[tap])
        w = (tokens[:, :1] @ text.T).softmax(-1)
        w = w / w.mean(-1, keepdim=True)
        cos = tokens @ text.T
        total = total + 0.5 * (w[..., 1] * cos[..., 1] - w[..., 0] * cos[..., 0])
    grid_map = total[:, 1:].reshape(-1, 1, *grid)
    raw = F.interpolate(grid_map, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()
    expected = np.stack([gaussian_filter(m, sigma=8.0, mode="reflect") for m in raw])
    np.testing.assert_allclose(result.maps.numpy(), expected, atol=1e-5)
    # the last V-V tap's CLS is the original CLS at the last block: CLIP's own image embedding
    cls = _unit(features.global_embedding)
    prob = (100.0 * cls @ text.T).softmax(-1)[:, 1]
    np.testing.assert_allclose(result.scores.numpy(), prob.numpy() + expected.reshape(2, -1).max(1), atol=1e-5)


def test_rvs_mean_is_normalised_mean_of_unit_rows():
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 1.0], [0.0, 2.0]])
    expected = F.normalize(torch.tensor([1.0, 2.0]), dim=0)  # rows normalised first: (1,0), (0,1), (0,1)
    torch.testing.assert_close(representative_vector(embeddings, "mean"), expected)


def test_rvs_pca_official_centring_and_sign():
    generator = torch.Generator().manual_seed(3)
    direction = _unit(torch.randn(8, generator=generator))
    # a tight ensemble around -direction, so that an unaligned singular vector could point either way
    embeddings = _unit(-direction + 0.2 * torch.randn(30, 8, generator=generator, dtype=torch.float64))
    got = representative_vector(embeddings, "pca").double()
    # by hand, as the official: coordinates are samples, sentences features; eigen-decompose the N x N scatter
    x = embeddings.numpy().T  # (D, N)
    centred = x - x.mean(0, keepdims=True)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    axis = centred @ vectors[:, np.argmax(values)]
    axis /= np.linalg.norm(axis)
    mean = embeddings.numpy().mean(0)
    axis = axis if axis @ mean >= 0 else -axis
    np.testing.assert_allclose(got.numpy(), axis, atol=1e-5)
    assert float(got @ -direction) > 0.9  # the dominant direction of the ensemble, pointing like its mean


def test_rvs_kde_matches_sklearn_density_weights():
    generator = torch.Generator().manual_seed(4)
    embeddings = _unit(torch.randn(25, 6, generator=generator, dtype=torch.float64))
    kde = KernelDensity(kernel="gaussian", bandwidth=0.3).fit(embeddings.numpy())
    log_density = kde.score_samples(embeddings.numpy())
    weights = np.exp(log_density - log_density.max())
    expected = (weights[:, None] * embeddings.numpy()).sum(0) / weights.sum()
    got = representative_vector(embeddings, "kde", kde_bandwidth=0.3)
    np.testing.assert_allclose(got.numpy(), expected / np.linalg.norm(expected), atol=1e-5)


def _clusters(sizes: tuple[int, ...], outliers: int, dim: int = 16, seed: int = 5) -> tuple[torch.Tensor, list]:
    """Unit points in tight clusters around random centres, plus scattered outliers; returns members per cluster."""
    generator = torch.Generator().manual_seed(seed)
    eye = torch.eye(dim, dtype=torch.float64)
    groups = [
        _unit(eye[i] + 0.02 * torch.randn(n, dim, generator=generator, dtype=torch.float64))
        for i, n in enumerate(sizes)
    ]
    noise = [_unit(-eye[i] + eye[-1 - i]).expand(1, dim) for i in range(outliers)]  # far from all and each other
    return torch.cat([*groups, *noise]), groups


def test_rvs_dbscan_takes_mean_of_largest_cluster():
    embeddings, groups = _clusters((20, 30), outliers=3)
    got = representative_vector(embeddings, "dbscan", dbscan_eps=0.5, dbscan_min_samples=15)
    torch.testing.assert_close(got, F.normalize(groups[1].mean(0), dim=0).float())


@pytest.mark.parametrize(("eps", "min_samples"), [(0.06, 5), (0.07, 6)])
@pytest.mark.parametrize("seed", range(3))
def test_dbscan_labels_are_scikit_learns(eps: float, min_samples: int, seed: int) -> None:
    """Uniform points in the unit square at a radius where clusters touch: core, border and noise points all
    occur, some border points next to core points of two clusters, and each point gets scikit-learn's label."""
    points = torch.rand(300, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    expected = DBSCAN(eps=eps, min_samples=min_samples).fit(points.numpy()).labels_
    got = dbscan_labels(points, eps, min_samples)
    near = (torch.cdist(points, points) <= eps).numpy()
    core = near.sum(axis=1) >= min_samples
    between = [i for i in range(len(points)) if not core[i] and len(set(expected[near[i] & core])) > 1]
    assert len(set(expected)) > 10 and (expected == -1).any() and between  # not a trivial case
    np.testing.assert_array_equal(got, expected)


def test_rvs_dbscan_without_cluster_falls_back_to_mean():
    embeddings, _ = _clusters((5, 6), outliers=2)
    got = representative_vector(embeddings, "dbscan", dbscan_eps=0.5, dbscan_min_samples=15)
    torch.testing.assert_close(got, representative_vector(embeddings, "mean"))


def test_rvs_mean_shift_takes_mean_of_largest_cluster():
    embeddings, groups = _clusters((25, 12), outliers=0)
    got = representative_vector(embeddings, "mean_shift", mean_shift_bandwidth=0.5)
    torch.testing.assert_close(got, F.normalize(groups[0].mean(0), dim=0).float())


# -- 4. SDP+ training and artifacts ------------------------------------------------------------------------------
def _square_batch(size: int, count: int = 4) -> dict[str, torch.Tensor]:
    """Random images with one brightened square each; the masks are the squares."""
    generator = torch.Generator().manual_seed(7)
    pixels = torch.randn(count, 3, size, size, generator=generator)
    masks = torch.zeros(count, size, size)
    for index in range(count):  # building test data, not model code
        top, left = (int(v) for v in torch.randint(0, size // 2, (2,), generator=generator))
        masks[index, top : top + size // 3, left : left + size // 3] = 1.0
    pixels = pixels + 3.0 * masks[:, None]
    return {"pixels": pixels, "masks": masks, "labels": torch.ones(count, dtype=torch.long)}


@pytest.fixture(scope="module")
def trained(tiny_backbone):
    """SDP+ after a few Adam steps on the synthetic batch, with its loss history."""
    torch.manual_seed(0)
    method = load_method("clip-ad+", backbone=tiny_backbone, class_name="bottle", lr=1e-2)
    batch = _square_batch(method.image_size)
    optimizer = method.configure_optimizer()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = method.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return method, losses


def test_only_linear_layers_get_gradients(tiny_backbone):
    method = load_method("clip-ad+", backbone=tiny_backbone, class_name="bottle")
    method.loss(_square_batch(method.image_size, count=2)).backward()
    assert [n for n, _ in method.named_parameters()] == [
        f"linear_layers.{i}.{p}" for i in range(len(method.taps)) for p in ("weight", "bias")
    ]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.trainable_parameters())
    assert all(p.grad is None for p in tiny_backbone.parameters())
    optimizer = method.configure_optimizer()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.9, 0.999)
    assert optimizer.defaults["lr"] == 1e-4 and method.config.epochs == 5 and method.config.batch_size == 8


def test_training_loss_decreases(trained):
    _, losses = trained
    assert all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3])


def test_fresh_instances_share_the_seeded_init(tiny_backbone):
    first = load_method("clip-ad+", backbone=tiny_backbone)
    second = load_method("clip-ad+", backbone=tiny_backbone)
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])


def test_artifact_round_trip_is_bit_exact(trained, tiny_backbone, tiny_pixels, tmp_path):
    method, _ = trained
    save_prompts(method, tmp_path / "art")
    fresh = load_method("clip-ad+", backbone=tiny_backbone, class_name="bottle", weights=tmp_path / "art")
    for key, value in method.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[key])
    ours, theirs = method.predict(tiny_pixels), fresh.predict(tiny_pixels)
    assert torch.equal(ours.maps, theirs.maps) and torch.equal(ours.scores, theirs.scores)


@pytest.mark.parametrize(("field", "value"), [("backbone", "ViT-B-16-plus-240:laion400m_e31@240"), ("taps", [2, 4])])
def test_artifact_for_other_backbone_or_taps_is_refused(trained, tiny_backbone, tmp_path, field, value):
    method, _ = trained
    directory = save_prompts(method, tmp_path / "art")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest[field] = value
    (directory / "manifest.json").write_text(json.dumps(manifest))
    fresh = load_method("clip-ad+", backbone=tiny_backbone)
    with pytest.raises(IncompatibleWeightsError, match=field):
        load_prompts(fresh, directory)


def test_altered_weights_file_is_refused(trained, tiny_backbone, tmp_path):
    method, _ = trained
    directory = save_prompts(method, tmp_path / "art")
    weights = directory / "prompts.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(IncompatibleWeightsError, match="sha256"):
        load_method("clip-ad+", backbone=tiny_backbone, weights=directory)


# -- 5. real-size architecture -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_vit_b16_shapes_and_finiteness():
    backbone = build_backbone("ViT-B-16", image_size=224)  # random weights: no tag, no file
    # 2 templates instead of 22 keep the 12-layer text tower's share of the time small on a shared CPU
    method = load_method("clip-ad+", backbone=backbone, templates=TEMPLATES[:2], dbscan_min_samples=5)
    assert method.taps == (3, 6, 9, 12) and method.surgery.reset_every == 3
    pixels = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    result = method.predict(pixels)
    assert result.maps.shape == (1, 224, 224) and result.scores.shape == (1,)
    assert torch.isfinite(result.maps).all() and torch.isfinite(result.scores).all()
