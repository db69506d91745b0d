"""Peak memory of an ingest actor's decode path, and the bytes each frame then costs on its way to a replica.

Usage: python -m benchmarks.bench_decode_memory [--frames 8] [--side 8000] [--image-size 224] [--format png]

The frames are 8000 x 8000 (64 Mpx, inside the default limits) and compress to about 190 KB each, the shape of
a decompression-bomb-like burst. They are made in this process; each measurement runs in a fresh child
process that does what one ingest actor does: ``decode_record`` on its two decode threads with the actor's
decode budget, keeping every request in flight (as when the replica is slow). Reported: the child's peak RSS
(``VmHWM``; ``ru_maxrss`` would carry this process's peak across the exec) above its peak before the first
decode, and the pickled size of one request (what Ray copies to the replica).
"""

from __future__ import annotations

import argparse
import json
import pickle
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CAMERA = "bench"


@dataclass
class _Record:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str = "frames"
    partition: int = 0
    offset: int = 0


def _frame(side: int, seed: int, fmt: str) -> bytes:
    from zsad_core.imageio import encode_jpeg, encode_png

    image = np.full((side, side, 3), 90 + seed, np.uint8)
    quarter = side // 4
    image[quarter : 3 * quarter, quarter : 3 * quarter] = (200, 40 + seed, 40)
    return encode_png(image) if fmt == "png" else encode_jpeg(image)


def _measure(paths: list[str], image_size: int, fmt: str) -> dict[str, float]:
    """In the child: decode every frame as an ingest actor does and keep the requests."""
    from services.config import CameraConfig, IngestConfig, LimitsConfig
    from services.frame_path.decode_budget import DecodeBudget
    from services.frame_path.decoding import decode_record
    from services.records import encode_headers

    camera = CameraConfig(method="clip-ad", class_name="object", threshold=0.5, image_size=image_size)
    content_type = "image/png" if fmt == "png" else "image/jpeg"
    records = [
        _Record(CAMERA.encode(), Path(path).read_bytes(), encode_headers(f"f{i}", 1.0e9, content_type), offset=i)
        for i, path in enumerate(paths)
    ]
    budget = DecodeBudget(IngestConfig().decode_budget_pixels)
    limits = LimitsConfig().image_limits()
    sizes = {CAMERA: image_size}
    baseline = _peak_rss_kb()
    with ThreadPoolExecutor(2) as decoders:
        in_flight = list(
            decoders.map(
                lambda r: decode_record(r, {CAMERA: camera}, limits, input_sizes=sizes, budget=budget), records
            )
        )
    peak = _peak_rss_kb()
    return {
        "peak_above_baseline_mb": (peak - baseline) / 1024,
        "bytes_per_request": len(pickle.dumps(in_flight[0], protocol=5)),
        "payload_kb": len(records[0].value) / 1024,
    }


def _peak_rss_kb() -> int:
    """This process's peak resident memory since its exec, in KB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status: this benchmark needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--side", type=int, default=8000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--format", choices=["png", "jpeg"], default="png")
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_measure(args.child, args.image_size, args.format)))
        return
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for index in range(args.frames):
            path = Path(folder) / f"frame{index}.{args.format}"
            path.write_bytes(_frame(args.side, index, args.format))
            paths.append(str(path))
        command = [sys.executable, "-m", "benchmarks.bench_decode_memory", "--image-size", str(args.image_size),
                   "--format", args.format, "--child", *paths]  # fmt: skip
        result = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    print(f"{args.frames} x {args.side}x{args.side} {args.format.upper()} ({result['payload_kb']:.0f} KB each), "
          f"model input {args.image_size} px: peak RSS +{result['peak_above_baseline_mb']:.0f} MB, "
          f"{result['bytes_per_request']:,} bytes per request sent to the replica")  # fmt: skip


if __name__ == "__main__":
    main()
