"""Per-method predict time over the bare backbone forward, same backbone, size and batch, one run.

Usage: python -m benchmarks.bench_methods [--backbone ViT-B-16-plus-240] [--image-size 240] [--batch 4]
                                           [--repeats 3] [--methods winclip clip-ad ...]

Random CLIP weights (no download): timing does not depend on the weight values. The bare forward is
``backbone.encode_image(pixels)`` (all blocks, global embedding), the work every method needs at least.
Issue 4's target is at most 1.3x for the training-free methods (AnoCLIP+'s test-time adaptation excepted).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform

import torch

from benchmarks.timing import best_time
from zsad_core.backbone import build_backbone
from zsad_core.methods import get_method_spec, list_methods, load_method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="ViT-B-16-plus-240")
    parser.add_argument("--image-size", type=int, default=240)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="*")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = build_backbone(args.backbone, image_size=args.image_size)
    pixels = torch.randn(args.batch, 3, args.image_size, args.image_size, generator=torch.Generator().manual_seed(0))

    def bare() -> None:
        with torch.inference_mode():
            backbone.encode_image(pixels)

    base = best_time(bare, args.repeats)
    print(f"# {dt.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads; {args.backbone} @ {args.image_size}, batch {args.batch}")
    print(f"bare backbone forward: {base * 1000 / args.batch:.1f} ms/img")
    print("| method | ms / image | predict / bare forward |")
    print("|---|---|---|")
    for name in args.methods or list_methods():
        fields = get_method_spec(name).config_cls.__dataclass_fields__
        overrides = {"image_views": "none"} if "image_views" in fields else {}
        method = load_method(name, backbone=backbone, **overrides).eval()
        seconds = best_time(lambda m=method: m.predict(pixels), args.repeats)
        print(f"| {name}{' (views: none)' if overrides else ''} | {seconds * 1000 / args.batch:.1f} | "
              f"{seconds / base:.2f}x |")


if __name__ == "__main__":
    main()
