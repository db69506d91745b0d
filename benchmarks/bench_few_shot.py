"""Cost of few-shot references: predict rate with k = 0, 1, 4, 16 references, memory per camera, and the
nearest-neighbour search in torch against faiss (when importable).

Usage: python -m benchmarks.bench_few_shot [--method clip-ad] [--backbone ViT-B-16] [--image-size 224]
                                           [--batch 4] [--shots 0 1 4 16] [--repeats 3] [--threads 2]

Random CLIP weights and random pixels: timing does not depend on the values. The references are built once
per k outside the timed region (a camera builds its memory once); the timed call is ``method.predict`` on
the same batch for every k. Memory bytes per camera are the float32 banks of all taps (one camera = one class
memory). The NN comparison runs the exact search of one batch against the k = max memory: torch in query
blocks (``nearest_distances``) and faiss ``IndexFlatIP`` (exact inner product, the same cosine result).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import time
from collections.abc import Callable

import torch

from benchmarks.timing import best_time
from zsad_core.backbone import build_backbone
from zsad_core.few_shot import MemoryOptions, nearest_distances, with_references
from zsad_core.few_shot.memory import patch_tokens
from zsad_core.methods import ZeroShotMethod, load_method


def _interleaved_best_times(scorers: dict[int, ZeroShotMethod], pixels: torch.Tensor, repeats: int) -> dict[int, float]:
    """Best predict time per k, the ks timed in turn within each repeat so load drift on a shared machine
    hits every k alike instead of whichever ran during a busy spell."""
    for scorer in scorers.values():
        scorer.predict(pixels)  # warm-up
    best = dict.fromkeys(scorers, float("inf"))
    for _ in range(repeats):
        for shots, scorer in scorers.items():
            started = time.perf_counter()
            scorer.predict(pixels)
            best[shots] = min(best[shots], time.perf_counter() - started)
    return best


def _faiss_search(queries: torch.Tensor, bank: torch.Tensor) -> Callable[[], torch.Tensor]:
    import faiss  # optional: measured only where it is installed

    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.numpy())
    unit = torch.nn.functional.normalize(queries, dim=-1).numpy()

    def search() -> torch.Tensor:
        similarity, _ = index.search(unit, 1)
        return (1.0 - torch.from_numpy(similarity[:, 0])) / 2.0

    return search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="clip-ad")
    parser.add_argument("--backbone", default="ViT-B-16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shots", type=int, nargs="+", default=[0, 1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-patches", type=int, default=16384)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = build_backbone(args.backbone, image_size=args.image_size)
    overrides = {"image_views": "none"} if args.method.startswith("anoclip") else {}
    method = load_method(args.method, backbone=backbone, **overrides).eval()
    generator = torch.Generator().manual_seed(0)
    side = args.image_size
    pixels = torch.randn(args.batch, 3, side, side, generator=generator)
    references = torch.randn(max(args.shots), 3, side, side, generator=generator)
    options = MemoryOptions(max_patches=args.max_patches)

    print(f"# {dt.date.today()} {platform.node()} {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads; {args.method} on {args.backbone} @ {side}, "
          f"batch {args.batch}, taps {list(method.taps)}, max_patches {args.max_patches}")
    scorers = {shots: method if shots == 0 else with_references(method, references[:shots], options)
               for shots in args.shots}
    seconds = _interleaved_best_times(scorers, pixels, args.repeats)
    base = seconds[args.shots[0]]
    print(f"| k | frames/s | predict / k = {args.shots[0]} | memory patches | memory per camera |")
    print("|---|---|---|---|---|")
    largest = None
    for shots, scorer in scorers.items():
        memory = getattr(scorer, "memory", None)
        patches = memory.patches if memory else 0
        size = f"{memory.nbytes / 2**20:.1f} MiB" if memory else "0"
        print(f"| {shots} | {args.batch / seconds[shots]:.2f} | {seconds[shots] / base:.2f}x | {patches} | {size} |")
        largest = memory or largest
    if largest is None:
        return
    with torch.inference_mode():
        tokens, _ = patch_tokens(backbone, pixels, largest.taps, largest.feature)
    tap = largest.taps[-1]
    queries, bank = tokens[tap].reshape(-1, tokens[tap].shape[-1]), largest.features[tap]
    torch_seconds = best_time(lambda: nearest_distances(queries, bank, "cosine"), args.repeats)
    print(f"\nNN search, one tap: {queries.shape[0]} query patches x {bank.shape[0]} memory patches x "
          f"{bank.shape[1]} dims")
    print(f"torch, blocked mm: {torch_seconds * 1000:.1f} ms")
    try:
        search = _faiss_search(queries, bank)
    except ImportError:
        print("faiss: not installed")
        return
    faiss_seconds = best_time(search, args.repeats)
    difference = (search() - nearest_distances(queries, bank, "cosine")).abs().max()
    print(f"faiss IndexFlatIP: {faiss_seconds * 1000:.1f} ms (max difference {float(difference):.1e})")


if __name__ == "__main__":
    main()
