"""Input conversion shared by the metric functions.

Why a module of its own: every public metric accepts numpy arrays or torch tensors (a model's output is often
still a tensor), and every one must refuse the same bad inputs (wrong shape, non-binary ground truth) with the
same message, before any large sort starts.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any) -> np.ndarray:
    """Return ``x`` as a numpy array; torch tensors are detached and copied to the CPU.

    Half-precision tensors are widened to float32 first because numpy has no bfloat16. torch is not imported:
    anything with ``detach`` is treated as a tensor, so this module stays importable without torch.
    """
    if hasattr(x, "detach"):
        tensor = x.detach().cpu()
        if tensor.is_floating_point() and tensor.element_size() < 4:
            tensor = tensor.float()
        return tensor.numpy()
    return np.asarray(x)


def as_scores(x: Any, ndim: int, name: str) -> np.ndarray:
    """Return scores as float32, or float64 when given float64.

    float32 halves the memory of a class's maps (31M pixels at 518x518) and sorts faster. float64 input is
    kept as is so that ties, and hence the metrics, are exactly those of the caller's array.

    Raises:
        ValueError: when ``x`` does not have ``ndim`` dimensions.
    """
    a = to_numpy(x)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if a.dtype != np.float64:
        a = a.astype(np.float32, copy=False)
    return a


def as_binary(x: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Return ground truth as a bool array of ``shape``; accepts bool or 0/1 of any numeric dtype.

    Raises:
        ValueError: on a shape mismatch or a value other than 0 and 1 (an un-thresholded, resized mask).
    """
    a = to_numpy(x)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype == np.bool_:
        return a
    binary = a != 0
    if not np.all(a[binary] == 1):
        raise ValueError(f"{name} must contain only 0 and 1 (threshold resized masks first)")
    return binary
