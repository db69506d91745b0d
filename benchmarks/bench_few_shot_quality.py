"""Few-shot against zero-shot on the synthetic benchmark: per class, k references averaged over seeds.

Usage: python -m benchmarks.bench_few_shot_quality [--methods clip-ad anoclip] [--backbone zsad-tiny-vit]
                                                   [--image-size 224] [--shots 0 1 4] [--seeds 0 1 2]
                                                   [--dataset synthetic:per_class=32,size=224]

The papers' protocol (:func:`zsad_core.evaluation.evaluate_few_shot`): for each class and seed, k good images of
the dataset's train split become the references; metrics per class are averaged over the seeds. Random CLIP
weights (none can be downloaded here), so the numbers say whether the memory carries the defects' signal on
these features, not how a pretrained CLIP scores. Prints one markdown table: pixel AUROC, PRO and image AUROC
per method, k and class.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform

import torch

from zsad_core.backbone import build_backbone
from zsad_core.data import build_dataset
from zsad_core.evaluation import evaluate_few_shot, evaluate_method
from zsad_core.methods import load_method
from zsad_core.metrics import EvaluationReport

COLUMNS = (("pixel_auroc", "pixel AUROC"), ("pixel_aupro", "PRO"), ("image_auroc", "image AUROC"))


def _row(method: str, shots: int, report: EvaluationReport) -> str:
    cells = []
    for name in [*report.per_class, "mean"]:
        row = report.mean if name == "mean" else report.per_class[name]
        cells.append(" / ".join(f"{100 * row[key]:.1f}" for key, _ in COLUMNS))
    return f"| {method} | {shots} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["clip-ad", "anoclip"])
    parser.add_argument("--backbone", default="zsad-tiny-vit")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", default="synthetic:per_class=32,size=224")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    backbone = build_backbone(args.backbone, image_size=args.image_size)
    dataset, references = build_dataset(args.dataset), build_dataset(args.dataset, split="train")
    print(f"# {dt.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}; {args.backbone} @ {args.image_size} (random weights), {args.dataset}, "
          f"seeds {args.seeds}")
    print("cells: pixel AUROC / PRO / image AUROC in %, per class averaged over the seeds (k = 0 has no draw)")
    print("| method | k | " + " | ".join([*dataset.class_names, "mean"]) + " |")
    print("|---|---|" + "---|" * (len(dataset.class_names) + 1))
    for name in args.methods:
        overrides = {"image_views": "none"} if name.startswith("anoclip") else {}
        method = load_method(name, backbone=backbone, **overrides)
        for shots in args.shots:
            if shots == 0:
                report = evaluate_method(method, dataset).report
            else:
                report, _ = evaluate_few_shot(method, dataset, references, shots, args.seeds)
            print(_row(name, shots, report), flush=True)


if __name__ == "__main__":
    main()
