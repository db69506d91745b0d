"""Time zsad_core.metrics at MVTec-AD size against the papers' per-threshold AUPRO loop (not a test).

MVTec-AD's test set at the ViT-L resolution is 1,725 maps of 518x518 (about 463M pixels) in 15 classes. The
data here is synthetic with a fixed seed: masks are smooth blobs (cubic upsampling of coarse noise,
thresholded) on about 73% of the images, as in MVTec-AD; maps are the mask plus smooth and fine noise,
Gaussian-blurred, so that the metrics land in a realistic range instead of at 100%.

Timed: ``evaluate`` with all seven metrics, once with the exact AUPRO and once with the cflow one, and on one
class the cflow AUPRO both vectorised and as the papers' loop (200 thresholds x a connected-component
labelling per image, regionprops-style). The loop runs on that class only; its cost for the full set is
extrapolated linearly in the number of maps (its labelling work is per image, its binarisation per pixel).

Run from the repository root:  ``python -m benchmarks.bench_metrics [--quick]``
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from zsad_core.metrics import aupro, evaluate

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
ANOMALOUS_FRACTION = 1258 / 1725  # MVTec-AD test set


def synthetic_dataset(
    n_classes: int, per_class: int, size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Maps ``(N, size, size)`` float32, masks bool, image scores and labels ``(N,)``, class names."""
    rng = np.random.default_rng(seed)
    n = n_classes * per_class
    maps = np.empty((n, size, size), dtype=np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    labels = rng.random(n) < ANOMALOUS_FRACTION
    for i in range(n):
        if labels[i]:
            field = _smooth_field(rng, size)
            masks[i] = field > min(1.6, 0.8 * field.max())
        fine = rng.standard_normal((size, size), dtype=np.float32)
        noisy = 0.6 * masks[i] + 0.3 * _smooth_field(rng, size) + fine
        maps[i] = cv2.GaussianBlur(noisy, (0, 0), sigmaX=4)
    scores = maps.reshape(n, -1).max(axis=1)
    names = [f"class{c:02d}" for c in range(n_classes) for _ in range(per_class)]
    return maps, masks, scores, labels.astype(np.int64), names


def _smooth_field(rng: np.random.Generator, size: int) -> np.ndarray:
    coarse = rng.standard_normal((12, 12), dtype=np.float32)
    return cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)


def loop_cflow_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3, steps: int = 200) -> float:
    """The papers' cal_pro_score structure: per threshold, label every mask and visit every region."""
    lo, hi = maps.min(), maps.max()
    thresholds = np.arange(lo, hi, (hi - lo) / steps).astype(maps.dtype)
    normal = ~masks
    n_normal = normal.sum()
    pros, fprs = [], []
    for threshold in thresholds:
        binary = maps > threshold
        overlaps = []
        for predicted, mask in zip(binary, masks, strict=True):
            regions, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
            for region_id, box in enumerate(ndimage.find_objects(regions), start=1):
                region = regions[box] == region_id
                overlaps.append(predicted[box][region].sum() / region.sum())
        pros.append(np.mean(overlaps))
        fprs.append((binary & normal).sum() / n_normal)
    pro, fpr = np.array(pros), np.array(fprs)
    keep = fpr < fpr_limit
    fpr, pro = fpr[keep], pro[keep]
    fpr = (fpr - fpr.min()) / (fpr.max() - fpr.min())
    return float(np.trapezoid(pro[::-1], fpr[::-1]))


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 classes x 8 maps of 128x128")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    n_classes, per_class, size = (15, 8, 128) if args.quick else (15, 115, 518)

    data, t_data = timed(synthetic_dataset, n_classes, per_class, size, args.seed)
    maps, masks, scores, labels, names = data
    exact, t_exact = timed(evaluate, maps, masks, scores, labels, names, aupro_variant="exact")
    cflow, t_cflow = timed(evaluate, maps, masks, scores, labels, names, aupro_variant="cflow")
    one = slice(0, per_class)
    fast, t_fast = timed(aupro, maps[one], masks[one], variant="cflow")
    slow, t_slow = timed(loop_cflow_aupro, maps[one], masks[one])
    t_slow_all = t_slow * len(names) / per_class

    print("zsad_core.metrics benchmark")
    command = [sys.executable, "-m", "benchmarks.bench_metrics", *(sys.argv[1:] if argv is None else argv)]
    print(f"command : {' '.join(command)}")
    print(f"date    : {datetime.now(UTC):%Y-%m-%d %H:%M UTC}")
    print(
        f"machine : {cpu_model()}, {platform.machine()}, {len(os.sched_getaffinity(0))} CPUs; "
        f"python {platform.python_version()}, numpy {np.__version__}, opencv {cv2.__version__}"
    )
    print(
        f"data    : {len(names)} maps of {size}x{size} ({maps.size / 1e6:.1f}M pixels), {n_classes} classes, "
        f"{int(labels.sum())} anomalous images, {masks.mean():.2%} anomalous pixels, seed {args.seed}"
    )
    print()
    rows = [
        ("generate synthetic data", t_data),
        ("evaluate: 7 metrics, AUPRO exact, all classes", t_exact),
        ("evaluate: 7 metrics, AUPRO cflow, all classes", t_cflow),
        (f"aupro(variant='cflow'), one class ({per_class} maps)", t_fast),
        (f"loop cflow AUPRO, one class ({per_class} maps)", t_slow),
        (f"loop cflow AUPRO, {len(names)} maps (extrapolated)", t_slow_all),
    ]
    for label, seconds in rows:
        print(f"{label:<56}{seconds:>10.2f} s")
    print(f"{'speed-up of aupro cflow over the loop, one class':<56}{t_slow / t_fast:>10.0f} x")
    print(f"{'same value? |vectorised - loop|':<56}{abs(fast - slow):>12.1e}")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"{'peak resident memory':<56}{peak_gib:>10.2f} GiB")
    print()
    print(exact.format_table())
    print(f"mean PRO, cflow variant: {100 * cflow.mean['pixel_aupro']:.1f}")


if __name__ == "__main__":
    main()
