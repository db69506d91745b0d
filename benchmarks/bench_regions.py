"""Defect regions at a calibrated pixel threshold: how many defects a box hits, how many boxes are false.

Usage: python -m benchmarks.bench_regions [--method clip-ad] [--shots 4] [--dataset synthetic:per_class=16,size=128]
                                          [--target 0.1] [--image-size 128]

Per class: a few-shot method (k good train images as references, the path that gives meaningful maps on random
CLIP weights); the good test images are split in two, the first half calibrates the pixel threshold with the
serving rule (the false-reject order statistic over each good map's highest value at ``--target``), and the
second half plus every defective image are turned into regions as a replica does
(:func:`zsad_core.decisions.extract_regions`, the whole frame as placement). A defect is hit when a box holds
at least one of its mask pixels; a region is false when its box holds none. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform

import numpy as np
import torch

from zsad_core.backbone import build_backbone
from zsad_core.data import build_dataset
from zsad_core.decisions import MapPlacement, extract_regions, false_reject_threshold
from zsad_core.few_shot import with_references
from zsad_core.methods import load_method


def _maps(method: object, images: list[np.ndarray]) -> list[np.ndarray]:
    return [result for start in range(0, len(images), 8) for result in
            method.predict(images[start : start + 8]).maps.cpu().numpy()]  # fmt: skip


def _hit(regions: list, mask: np.ndarray) -> bool:
    return any(mask[r.y : r.y + r.height, r.x : r.x + r.width].any() for r in regions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="clip-ad")
    parser.add_argument("--backbone", default="zsad-tiny-vit")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--dataset", default="synthetic:per_class=16,size=128")
    parser.add_argument("--target", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build_backbone(args.backbone, image_size=args.image_size)
    dataset, references = build_dataset(args.dataset), build_dataset(args.dataset, split="train")
    print(f"# {dt.date.today()} {platform.node()} {platform.machine()}, torch {torch.__version__}; {args.method} "
          f"k={args.shots}, {args.backbone} @ {args.image_size} (random weights), {args.dataset}, "
          f"pixel threshold: false-reject target {args.target} on good maps' maxima")
    print("| class | calibration goods | pixel threshold | defects hit | false regions / good frame "
          "| false regions / defective frame |")
    print("|---|---|---|---|---|---|")
    totals = np.zeros(5)
    for class_name in dataset.class_names:
        method = load_method(args.method, backbone=backbone, class_name=class_name)
        refs = [references[i].image for i in references.indices(class_name)[: args.shots]]
        method = with_references(method, refs)
        samples = [dataset[int(i)] for i in dataset.indices(class_name)]
        goods = [s for s in samples if s.label == 0]
        bads = [s for s in samples if s.label == 1]
        calibration, held_out = goods[: len(goods) // 2], goods[len(goods) // 2 :]
        maxima = [m.max() for m in _maps(method, [s.image for s in calibration])]
        threshold = false_reject_threshold(np.asarray(maxima), args.target).threshold
        evaluated = held_out + bads
        maps = _maps(method, [s.image for s in evaluated])
        hits = false_good = false_bad = 0
        for sample, anomaly_map in zip(evaluated, maps, strict=True):
            height, width = sample.image.shape[:2]
            regions = extract_regions(anomaly_map, threshold, MapPlacement.for_frame(width, height))
            mask = sample.mask if sample.mask is not None else np.zeros((height, width), bool)
            if anomaly_map.shape != (height, width):
                raise SystemExit(f"map {anomaly_map.shape} differs from the frame {height}x{width}: set --image-size")
            false = sum(not _hit([r], mask) for r in regions)
            if sample.label:
                hits += _hit(regions, mask)
                false_bad += false
            else:
                false_good += false
        totals += (hits, len(bads), false_good, len(held_out), false_bad)
        print(f"| {class_name} | {len(calibration)} | {threshold:.4f} | {hits}/{len(bads)} "
              f"| {false_good / max(len(held_out), 1):.2f} | {false_bad / max(len(bads), 1):.2f} |", flush=True)
    hits, n_bad, false_good, n_good, false_bad = totals
    print(f"| all | | | {int(hits)}/{int(n_bad)} ({100 * hits / n_bad:.0f} %) | {false_good / n_good:.2f} "
          f"| {false_bad / n_bad:.2f} |")


if __name__ == "__main__":
    main()
