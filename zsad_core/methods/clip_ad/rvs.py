"""CLIP-AD's text side: the prompt ensemble and Representative Vector Selection (docs/methods.md, CLIP-AD).

Each state ("normal", "abnormal") has a few hundred L2-normalised sentence embeddings (state words x
templates). The paper argues that their plain mean is pulled by outlying sentences and picks one
*representative* vector with a statistic of the ensemble instead; the scripts use DBSCAN everywhere.

Differences from the official ``util/prompt_ensemble.py`` (all deliberate, see each selector):

* every selector runs in float64 and returns float32; the official casts the pca/kde/dbscan/mean_shift
  vectors to float16 before normalising them (rounding the text features to ~3 significant digits);
* ``dbscan`` falls back to the mean when DBSCAN labels every sentence as noise, where the official crashes
  (``np.argmax`` of an empty ``bincount``);
* ``kde`` weights sentences by ``softmax(log density)``: the same weighted mean as ``exp(log density) / sum``,
  without the overflow risk of ``exp`` of a 640-dimensional log density (about e^180 at bandwidth 0.3).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from zsad_core.backbone import ClipBackbone
from zsad_core.methods.prompting import WINCLIP_TEMPLATES, build_sentences, encode_sentences

logger = logging.getLogger(__name__)

RepVec = Literal["mean", "pca", "kde", "dbscan", "mean_shift"]
RVS_METHODS: tuple[str, ...] = ("mean", "pca", "kde", "dbscan", "mean_shift")

# State words of the official ensemble: 9 normal, 10 abnormal (CLIP-AD util/prompt_ensemble.py).
NORMAL_STATES: tuple[str, ...] = (
    "flawless {}",
    "perfect {}",
    "unblemished {}",
    "{} without flaw",
    "{} without defect",
    "{} without damage",
    "{} without scratch",
    "{} without crack",
    "{} without contamination",
)
ABNORMAL_STATES: tuple[str, ...] = (
    "damaged {}",
    "imperfect {}",
    "blemished {}",
    "broken {}",
    "{} with flaw",
    "{} with defect",
    "{} with damage",
    "{} with scratch",
    "{} with crack",
    "{} with contamination",
)

# The order differs from the official list, which changes no selector (DBSCAN border points aside).
TEMPLATES: tuple[str, ...] = WINCLIP_TEMPLATES


# -- selectors: (N, D) float64 unit rows -> (D,) float64, not yet normalised ----------------------------------
def _mean(embeddings: torch.Tensor) -> torch.Tensor:
    return embeddings.mean(0)


def _pca(embeddings: torch.Tensor) -> torch.Tensor:
    """First principal axis, as the official computes it, sign-aligned to the mean.

    The official PCA runs on the *transposed* matrix: the D coordinates are the samples and the N sentences
    the features, so each sentence is centred on the mean of its own coordinates (not each coordinate on its
    mean over sentences). The projection of the coordinates on the top axis is then ``σ₀ v₀``, v₀ the top
    right singular vector of the row-centred ``(N, D)`` matrix: the dominant direction of the ensemble.
    Textbook PCA (centring over sentences) would instead return the direction of largest spread *around*
    the mean, which is no representative of the state at all.
    """
    centred = embeddings - embeddings.mean(1, keepdim=True)
    axis = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return axis if float(axis @ embeddings.mean(0)) >= 0 else -axis


def _kde(embeddings: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Density-weighted mean; Gaussian kernel density of each sentence among all of them (itself included)."""
    squared = torch.cdist(embeddings, embeddings).square()  # (N, N)
    log_density = torch.logsumexp(-squared / (2.0 * bandwidth**2), dim=1)  # up to a constant, which softmax drops
    return log_density.softmax(0) @ embeddings


def _largest_cluster_mean(embeddings: torch.Tensor, labels: np.ndarray, selector: str) -> torch.Tensor:
    """Mean of the most populated cluster (ties: the lowest label, as ``np.argmax``); noise is label -1."""
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        logger.warning("%s found no cluster among %d sentences; using their mean", selector, len(labels))
        return embeddings.mean(0)
    members = torch.from_numpy(labels == np.bincount(clustered).argmax())
    return embeddings[members].mean(0)


def dbscan_labels(points: torch.Tensor, eps: float, min_samples: int) -> np.ndarray:
    """DBSCAN's cluster labels of ``(N, D)`` points (noise: -1), numbered as scikit-learn numbers them.

    A point with at least ``min_samples`` points within ``eps`` (itself included) is a core point; clusters grow
    from core points taken in index order, and a border point joins the first cluster that reaches it.

    Why not scikit-learn's ``DBSCAN``: the ensemble is a few hundred sentences, so the whole distance matrix is
    small, and importing scikit-learn cost about 1.7 s of CPU in every process that builds CLIP-AD (each serving
    replica's start, each ``zsad eval``). A unit test compares the labels with scikit-learn's.
    """
    distances = torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    neighbours = (distances <= eps).numpy()
    core = neighbours.sum(axis=1) >= min_samples
    labels = np.full(len(points), -1)
    cluster = 0
    for seed in np.flatnonzero(core):
        if labels[seed] >= 0:
            continue
        labels[seed] = cluster
        reached = [seed]
        while reached:
            point = reached.pop()
            if not core[point]:
                continue  # a border point belongs to the cluster but does not extend it
            joining = np.flatnonzero(neighbours[point] & (labels < 0))
            labels[joining] = cluster
            reached.extend(joining.tolist())
        cluster += 1
    return labels


def _dbscan(embeddings: torch.Tensor, eps: float, min_samples: int) -> torch.Tensor:
    return _largest_cluster_mean(embeddings, dbscan_labels(embeddings, eps, min_samples), "DBSCAN")


def _mean_shift(embeddings: torch.Tensor, bandwidth: float) -> torch.Tensor:
    from sklearn.cluster import MeanShift  # scikit-learn is imported only when this selector runs

    labels = MeanShift(bandwidth=bandwidth).fit(embeddings.numpy()).labels_
    return _largest_cluster_mean(embeddings, labels, "MeanShift")


def representative_vector(
    embeddings: torch.Tensor,
    method: RepVec = "dbscan",
    *,
    kde_bandwidth: float = 0.3,
    dbscan_eps: float = 0.5,
    dbscan_min_samples: int = 15,
    mean_shift_bandwidth: float = 2.0,
) -> torch.Tensor:
    """One unit text vector for a state from its sentence embeddings.

    Args:
        embeddings: ``(N, D)`` sentence embeddings (normalised here first, as the official does).
        method: ``mean``; ``pca`` (first principal axis, official centring, sign-aligned to the mean);
            ``kde`` (Gaussian kernel-density-weighted mean); ``dbscan`` (mean of the largest DBSCAN cluster,
            the mean itself when there is no cluster); ``mean_shift`` (mean of the largest mean-shift cluster).
        kde_bandwidth: Gaussian kernel bandwidth of ``kde``.
        dbscan_eps: neighbourhood radius of ``dbscan`` (Euclidean, on unit vectors).
        dbscan_min_samples: core-point neighbour count of ``dbscan`` (the point itself included).
        mean_shift_bandwidth: kernel bandwidth of ``mean_shift``.

    Returns:
        ``(D,)`` L2-normalised float32 vector on the input's device.
    """
    unit = F.normalize(embeddings.detach().to("cpu", torch.float64), dim=-1)
    if method == "mean":
        vector = _mean(unit)
    elif method == "pca":
        vector = _pca(unit)
    elif method == "kde":
        vector = _kde(unit, kde_bandwidth)
    elif method == "dbscan":
        vector = _dbscan(unit, dbscan_eps, dbscan_min_samples)
    elif method == "mean_shift":
        vector = _mean_shift(unit, mean_shift_bandwidth)
    else:
        raise ValueError(f"rep_vec must be one of {RVS_METHODS}, got {method!r}")
    return F.normalize(vector, dim=-1).to(embeddings.device, torch.float32)


def encode_state_texts(
    backbone: ClipBackbone,
    class_name: str,
    states: Sequence[Sequence[str]],
    templates: Sequence[str],
    method: RepVec = "dbscan",
    **options: float,
) -> torch.Tensor:
    """Representative text vectors of several states of one class.

    Args:
        backbone: the CLIP whose text tower encodes the sentences.
        class_name: product name filled into the state words.
        states: per state, its state words with ``{}`` for the class name (normal first, then abnormal).
        templates: sentence templates with ``{}`` for the state phrase.
        method: representative-vector selector, see :func:`representative_vector`.
        **options: the selector's keyword options (``kde_bandwidth``, ``dbscan_eps``, ...).

    Returns:
        ``(len(states), D)`` unit rows, in the order of ``states``.
    """
    rows = []
    for words in states:  # two ensembles; the sentences of each are encoded as one batch
        embeddings = encode_sentences(backbone, build_sentences(words, templates, class_name))
        rows.append(representative_vector(embeddings, method, **options))
    return torch.stack(rows)
