"""``zsad demo``: the README's main command.

Until the streaming stack runs end to end it shows the library on embedded defaults: synthetic products with
synthetic defects, two methods sharing one backbone, scores and overlays on disk, and the papers' metrics.
No weights can be downloaded on the project's machines, so it uses random CLIP weights unless a weight file
is given; the maps then show the pipeline working, not a trained detector.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DEMO_METHODS = ("winclip", "clip-ad")


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad demo``."""
    demo = commands.add_parser("demo", help="run the main job on embedded defaults (synthetic frames)")
    demo.add_argument("--out", default="runs/demo", help="where overlays and the report go")
    demo.add_argument("--frames", type=int, default=8, help="synthetic frames per method")
    demo.add_argument("--backbone", default="ViT-B-16-plus-240", help="CLIP architecture shared by the methods")
    demo.add_argument("--backbone-weights", help="local CLIP weight file; without it the weights are random")
    demo.add_argument("--image-size", type=int, default=240)
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Two methods on one shared backbone over synthetic frames; prints throughput and metrics."""
    from zsad_core import load_method
    from zsad_core.backbone import build_backbone
    from zsad_core.data import SyntheticDataset
    from zsad_core.evaluation import evaluate_method
    from zsad_core.visualize import save_overlay

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = args.backbone_weights or "random"
    print(f"backbone {args.backbone} @ {args.image_size}, weights: {weights}")
    if weights == "random":
        print("  (no pretrained CLIP weights on this machine: maps are random-weight maps, the pipeline is real)")
    backbone = build_backbone(args.backbone, weights=weights, image_size=args.image_size)
    dataset = SyntheticDataset(seed=7, classes=2, per_class=max(2, args.frames // 2), size=args.image_size)
    for name in DEMO_METHODS:
        method = load_method(name, backbone=backbone)
        started = time.perf_counter()
        run = evaluate_method(method, dataset, batch_size=8)
        elapsed = time.perf_counter() - started
        print(f"\n== {name}: {len(dataset)} frames in {elapsed:.1f} s ({len(dataset) / elapsed:.2f} frames/s)")
        print(run.report.format_table())
        sample = dataset[int(run.labels.argmax())]
        method.setup(sample.class_name)
        result = method.predict([sample.image])
        path = save_overlay(out / f"{name}_{Path(sample.path).stem}.png", sample.image, result.maps[0].numpy())
        print(f"overlay of an anomalous frame: {path}")
    return 0
