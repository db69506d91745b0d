"""Images/s, FLOPs per image and the fraction of the device's measured matmul peak, per model, method and batch.

Usage: python -m benchmarks.bench_models [--models ViT-B-16-plus-240@240,ViT-L-14-336@518] [--methods winclip,clip-ad]
                                          [--batches 1,8,32] [--device cuda|cpu] [--precision fp32|bf16|amp_bf16]
                                          [--compile none|default|reduce-overhead|max-autotune] [--repeats 3]
                                          [--warmup 1] [--time-budget-s 60] [--methods-options image_views=none]
                                          [--overlap] [--check-flops]

What each number is:

* A model is ``arch@size``. All methods of a model share one backbone built at that size with random CLIP weights
  (timing and FLOPs do not depend on the weight values), so every method is measured on both models, not only
  on its official backbone (docs/methods.md). The backbone keeps the architecture's activation
  (VCP-CLIP's GELU costs the same as QuickGELU).
* images/s = batch / best time of one call, over ``--repeats`` timed calls after ``--warmup`` untimed ones. A
  call copies a batch of random normalised pixels ``(B, 3, S, S)`` to the device (from pinned host memory with
  ``non_blocking=True`` on CUDA) and runs ``method.predict``; CUDA is synchronised before and after each timed
  call. JPEG decoding and resizing are excluded, except in the ``--overlap`` column.
* GFLOPs/image: ``torch.utils.flop_counter.FlopCounterMode`` over one ``predict`` of a batch of 1: the model's
  forward including the method's extra work (WinCLIP's window forwards, AnoCLIP's views when enabled, VCP-CLIP's
  per-image text encoder, AnoCLIP+'s test-time adaptation). Convention: 2 FLOPs per multiply-add, counting
  matmuls, convolutions and attention only (no elementwise ops, norms or softmax). See :func:`count_flops`.
* Peak: the best rate of square ``--peak-size`` matmuls (8192 on CUDA, 2048 on CPU) in bf16 and in fp32, after
  one warm-up. On CUDA the fp32 rate is true fp32 unless TF32 is enabled (the header says which).
* % of peak = images/s x FLOPs/image / peak rate. Both peaks are reported: on a CPU without bf16 matrix units
  bf16 can be slower than fp32.
* ``--time-budget-s``: before each measurement its duration is estimated as (warm-up + repeats) x batch x seconds
  per image, using the method's previous measurement, or its FLOPs at the precision's peak rate before the first
  (an underestimate). A batch whose estimate exceeds the budget is skipped with all larger ones of that method,
  shown as "skipped (budget)", so a CPU run on 2 cores stays bounded. A batch that runs out of GPU memory is
  shown as "out of memory" and larger ones are skipped.
* ``--compile``: every residual block of the vision tower is compiled in place (``nn.Module.compile``). The
  methods run the blocks one by one (taps, the V-V path), so compiling the tower's ``forward`` would never be
  used. Blocks that also compute the V-V path (AnoCLIP, CLIP-AD) call the block's layers directly and stay eager,
  as does the text tower. ``reduce-overhead`` adds CUDA graphs. FLOPs are counted before compiling.
* ``--overlap``: images/s of the whole path from JPEG bytes: synthetic ``--frame-size`` JPEGs are decoded and
  resized on a thread pool (``--decode-workers``) for batch i+1 while the device runs batch i, then pinned and
  copied with ``non_blocking=True``; measured over ``max(3, repeats)`` consecutive batches. Meant for CUDA; on CPU
  decoding competes with the model for the same cores.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as dt
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import cv2
import numpy as np
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException, FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from zsad_core.backbone import ClipBackbone, build_backbone
from zsad_core.imageio import encode_jpeg
from zsad_core.methods import ZeroShotMethod, get_method_spec, list_methods, load_method
from zsad_core.preprocess import PreprocessConfig, preprocess

COMPUTE_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16, "amp_bf16": torch.bfloat16}


# -- device and peak -----------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (a no-op on CPU), so wall-clock time covers the device's work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int, samples: int) -> float:
    """Best FLOP/s of ``size`` x ``size`` matmuls in ``dtype`` (2 * size**3 FLOPs each), after one warm-up sample."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    out = torch.empty_like(a)
    per_sample = 10 if device.type == "cuda" else 1  # a GPU matmul takes about a millisecond: time several
    best = math.inf
    for sample in range(samples + 1):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(per_sample):
            torch.mm(a, b, out=out)
        synchronize(device)
        if sample:
            best = min(best, (time.perf_counter() - started) / per_sample)
    return 2 * size**3 / best


def machine_description(device: torch.device) -> str:
    """Host name, OS, CPU model (from /proc/cpuinfo), logical CPUs, torch threads and, on CUDA, the GPU."""
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")]
        cpu = names[0] if names else cpu
    text = (
        f"{platform.node()}, {platform.platform()}, {cpu} ({os.cpu_count()} logical CPUs), "
        f"{torch.get_num_threads()} torch threads"
    )
    if device.type == "cuda":
        tf32 = "on" if torch.backends.cuda.matmul.allow_tf32 else "off"
        text += f", GPU {torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, TF32 {tf32})"
    return text


# -- FLOPs ---------------------------------------------------------------------------------------------------------
def _cpu_flash_attention_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# torch's formula table has the CUDA attention kernels but not the CPU one, which would otherwise count as zero.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_flash_attention_flops}


def count_flops(fn: Callable[[torch.Tensor], object], pixels: torch.Tensor) -> int:
    """FLOPs of ``fn(pixels)`` as counted by ``FlopCounterMode`` (2 per multiply-add; matmuls, convs, attention).

    The count runs on fake tensors (shapes only, no arithmetic, so it costs no model compute) when
    ``fn`` allows it; functions that read tensor values (``.item()``, as VCP-CLIP and ViP2-CLIP do) run for real.
    ``nn.MultiheadAttention``'s fused inference kernel is one op the counter cannot see into, so it is switched off
    while counting and the attention runs as its separate projections and attention ops.
    """
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        try:
            with (
                FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter,
                FakeTensorMode(allow_non_fake_inputs=True) as fake,
            ):
                fn(fake.from_tensor(pixels))
        except (DataDependentOutputException, DynamicOutputShapeException):
            with FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS) as counter:
                fn(pixels)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return counter.get_total_flops()


def hand_vit_flops(backbone: ClipBackbone) -> int:
    """FLOPs of ``encode_image`` on one image, by hand, in the counter's convention (biases not counted).

    With D the width, F the MLP width, N = rows * cols + 1 tokens, P the patch side and E the joint dimension:
    patch embedding 2 * (N - 1) * 3P^2 * D; per block 2N(4D^2 + 2DF) (QKV, output projection, two MLP layers)
    plus 2 * 2N^2 D (q k^T and attention x v over all heads); the CLS projection 2DE.
    """
    visual = backbone.model.visual
    width, rows, cols = backbone.width, *backbone.grid
    tokens, patch = rows * cols + 1, visual.patch_size[0]
    mlp = visual.transformer.resblocks[0].mlp.c_fc.out_features
    per_block = 2 * tokens * (4 * width**2 + 2 * width * mlp) + 2 * 2 * tokens**2 * width
    return 2 * (tokens - 1) * 3 * patch**2 * width + backbone.num_layers * per_block + 2 * width * backbone.embed_dim


# -- timing --------------------------------------------------------------------------------------------------------
def best_call_seconds(call: Callable[[], object], warmup: int, repeats: int, device: torch.device) -> float:
    """Best wall time of ``call`` over ``repeats`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        started = time.perf_counter()
        call()
        synchronize(device)
        best = min(best, time.perf_counter() - started)
    return best


def host_batch(batch: int, size: int, device: torch.device) -> torch.Tensor:
    """Random normalised pixels ``(batch, 3, size, size)`` on the host, pinned when they go to a GPU."""
    pixels = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    return pixels.pin_memory() if device.type == "cuda" else pixels


def synthetic_jpegs(count: int, width: int, height: int) -> list[bytes]:
    """Camera-like JPEG frames: smooth colour fields (upsampled noise), quality 90."""
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(count):
        coarse = rng.integers(0, 256, (max(1, height // 32), max(1, width // 32), 3), dtype=np.uint8)
        frames.append(encode_jpeg(cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC), quality=90))
    return frames


def overlapped_rate(
    method: ZeroShotMethod, frames: list[bytes], cfg: PreprocessConfig, pool: ThreadPoolExecutor, steps: int
) -> float:
    """Steady-state images/s from JPEG bytes to results over ``steps`` batches of ``frames``.

    Each step submits the next batch's decoding to ``pool``, launches ``predict`` on the current batch (CUDA
    kernel launches return at once) and then waits for the decoded batch, so decoding (OpenCV and PIL release
    the GIL) runs while the device computes. The first batch is decoded before the clock starts.
    """
    device = method.backbone.device

    def decode(data: bytes) -> torch.Tensor:
        return preprocess([data], cfg)[0][0]

    def submit() -> list[Future[torch.Tensor]]:
        return [pool.submit(decode, data) for data in frames]

    def collect(pending: list[Future[torch.Tensor]]) -> torch.Tensor:
        pixels = torch.stack([future.result() for future in pending])
        # A fresh pinned buffer per batch: the previous batch's non_blocking copy may still be in flight.
        return pixels.pin_memory() if device.type == "cuda" else pixels

    pixels = collect(submit())
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        pending = submit()
        method.predict(pixels.to(device, non_blocking=True))
        pixels = collect(pending)
    synchronize(device)
    return steps * len(frames) / (time.perf_counter() - started)


# -- one model -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """One table row; ``status`` replaces the rate when the batch was not measured."""

    method: str
    batch: int
    gflops: float
    images_per_s: float | None = None
    overlapped: float | None = None
    status: str = ""


def method_options(name: str, options: dict[str, object]) -> dict[str, object]:
    """The options that ``name``'s config has (``image_views`` only reaches AnoCLIP and AnoCLIP+)."""
    fields = {field.name for field in dataclasses.fields(get_method_spec(name).config_cls)}
    return {key: value for key, value in options.items() if key in fields}


def compile_vision_blocks(backbone: ClipBackbone, mode: str) -> None:
    """Compile each residual block of the vision tower in place (see the module docstring for why blocks)."""
    for block in backbone.model.visual.transformer.resblocks:
        block.compile(mode=mode)


def measure_method(
    method: ZeroShotMethod, gflops: float, args: argparse.Namespace, seconds_per_image: float, label: str
) -> list[Row]:
    """Rows of one method over ``args.batches`` (ascending), honouring the time budget and GPU memory."""
    device, size = method.backbone.device, method.image_size
    rows, stop = [], ""
    for batch in args.batches:
        estimate = (args.warmup + args.repeats) * batch * seconds_per_image
        if not stop and estimate > args.time_budget_s:
            stop = "skipped (budget)"
        if stop:
            rows.append(Row(label, batch, gflops, status=stop))
            continue
        print(f"  {label}, batch {batch} (estimate {estimate:.0f} s)", file=sys.stderr, flush=True)
        host = host_batch(batch, size, device)
        try:
            seconds = best_call_seconds(
                lambda h=host: method.predict(h.to(device, non_blocking=True)), args.warmup, args.repeats, device
            )
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            stop = "out of memory"
            rows.append(Row(label, batch, gflops, status=stop))
            continue
        seconds_per_image = seconds / batch
        row = Row(label, batch, gflops, images_per_s=batch / seconds)
        if args.frames:
            cfg = method.backbone.preprocess_config()
            with ThreadPoolExecutor(args.decode_workers) as pool:
                row.overlapped = overlapped_rate(method, args.frames[:batch], cfg, pool, max(3, args.repeats))
        rows.append(row)
    return rows


def bench_model(model: str, args: argparse.Namespace, peaks: dict[torch.dtype, float]) -> list[Row]:
    """Build ``arch@size`` once, count every method's FLOPs, optionally compile, then time every method."""
    arch, _, size = model.partition("@")
    backbone = build_backbone(arch, image_size=int(size), precision=args.precision, device=args.device)
    one = torch.randn(1, 3, backbone.image_size, backbone.image_size, device=args.device)
    if args.check_flops:
        counted, hand = count_flops(backbone.encode_image, one), hand_vit_flops(backbone)
        print(
            f"FLOP check, bare visual tower of {model} (encode_image, batch 1): counted {counted:,} FLOPs, "
            f"by hand {hand:,} FLOPs (see hand_vit_flops), counted / hand = {counted / hand:.4f}\n",
            flush=True,
        )
    methods = {}
    for name in args.methods:
        options = method_options(name, args.options)
        label = name + "".join(f" ({key}={value})" for key, value in options.items())
        method = load_method(name, backbone=backbone, **options).eval()
        methods[label] = (method, count_flops(method.predict, one))
    if args.compile != "none":
        compile_vision_blocks(backbone, args.compile)
    rate = peaks[COMPUTE_DTYPE[args.precision]]
    rows = []
    for label, (method, flops) in methods.items():
        rows += measure_method(method, flops / 1e9, args, flops / rate, label)
    return rows


def print_table(model: str, rows: list[Row], peaks: dict[torch.dtype, float], overlap: bool) -> None:
    """The markdown table of one model."""
    print(f"### {model}\n")
    extra = " images/s from JPEG, decode overlapped |" if overlap else ""
    print(f"| method | batch | images/s | GFLOPs/image | % of bf16 peak | % of fp32 peak |{extra}")
    print("|---|---|---|---|---|---|" + ("---|" if overlap else ""))
    for row in rows:
        if row.images_per_s is None:
            cells = [row.status, f"{row.gflops:.4g}", "", ""] + ([""] if overlap else [])
        else:
            flop_rate = row.images_per_s * row.gflops * 1e9
            cells = [
                f"{row.images_per_s:.2f}",
                f"{row.gflops:.4g}",
                f"{100 * flop_rate / peaks[torch.bfloat16]:.3g}",
                f"{100 * flop_rate / peaks[torch.float32]:.3g}",
            ]
            cells += [f"{row.overlapped:.2f}"] if overlap else []
        print(f"| {row.method} | {row.batch} | " + " | ".join(cells) + " |")
    print(flush=True)


# -- command line --------------------------------------------------------------------------------------------------
def parse_options(text: str) -> dict[str, object]:
    """``key=value,key=value`` with Python literals for numbers and booleans, anything else a string."""
    options: dict[str, object] = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            options[key.strip()] = value.strip()
    return options


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ViT-B-16-plus-240@240,ViT-L-14-336@518", help="comma-separated arch@size")
    parser.add_argument("--methods", help="comma-separated method names (default: all registered)")
    parser.add_argument("--batches", default="1,8,32", help="comma-separated batch sizes")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=list(COMPUTE_DTYPE), help="default: amp_bf16 on cuda, fp32 on cpu")
    parser.add_argument(
        "--compile",
        choices=["none", "default", "reduce-overhead", "max-autotune"],
        help="torch.compile mode of the vision blocks (default: default on cuda, none on cpu)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (the best is kept)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument(
        "--time-budget-s",
        type=float,
        default=math.inf,
        help="skip a batch (and larger ones) whose estimated measurement time exceeds this",
    )
    parser.add_argument(
        "--methods-options",
        default="image_views=none",
        help="key=value,... passed to every method whose config has the key",
    )
    parser.add_argument("--overlap", action="store_true", help="also measure images/s from JPEG with overlapped decode")
    parser.add_argument("--frame-size", default="1280x720", help="WIDTHxHEIGHT of the --overlap JPEG frames")
    parser.add_argument("--decode-workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--peak-size", type=int, help="side of the peak matmuls (default: 8192 on cuda, 2048 on cpu)")
    parser.add_argument("--peak-samples", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument(
        "--check-flops",
        action="store_true",
        help="compare the counted FLOPs of each bare visual tower with the hand formula",
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"
    args.device = torch.device(args.device)
    args.methods = args.methods.split(",") if args.methods else list_methods()
    args.batches = sorted({int(batch) for batch in args.batches.split(",")})
    args.precision = args.precision or ("amp_bf16" if cuda else "fp32")
    args.compile = args.compile or ("default" if cuda else "none")
    args.peak_size = args.peak_size or (8192 if cuda else 2048)
    args.options = parse_options(args.methods_options)
    known = {field.name for name in list_methods() for field in dataclasses.fields(get_method_spec(name).config_cls)}
    if set(args.options) - known:
        parser.error(f"--methods-options: no registered method has {sorted(set(args.options) - known)}")
    for name in args.methods:
        get_method_spec(name)  # an unknown name fails here, listing the valid ones, before anything is measured
    width, height = (int(side) for side in args.frame_size.lower().split("x"))
    args.frames = synthetic_jpegs(args.batches[-1], width, height) if args.overlap else []
    return args


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peaks = {
        dtype: matmul_rate(dtype, args.device, args.peak_size, args.peak_samples)
        for dtype in (torch.bfloat16, torch.float32)
    }
    options = ", ".join(f"{key}={value}" for key, value in args.options.items()) or "none"
    if args.options.get("image_views") == "none":
        options += " (the serving setting: AnoCLIP and AnoCLIP+ score the image alone, not 22 augmented views)"
    budget = "none" if math.isinf(args.time_budget_s) else f"{args.time_budget_s:g} s per measurement"
    print(f"# Model throughput, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}\n")
    print(f"Command: `python -m benchmarks.bench_models {shlex.join(sys.argv[1:])}`  ")
    print(f"Machine: {machine_description(args.device)}  ")
    print(
        f"torch {torch.__version__}, device {args.device}, precision {args.precision}, compile {args.compile}, "
        f"warm-up {args.warmup} + best of {args.repeats}, time budget {budget}  "
    )
    print(f"Method options, given to the methods whose config has them: {options}  ")
    print(
        f"Measured peak ({args.peak_size}-square matmuls, best of {args.peak_samples}): "
        f"bf16 {peaks[torch.bfloat16] / 1e12:.3f} TFLOP/s, fp32 {peaks[torch.float32] / 1e12:.3f} TFLOP/s  "
    )
    print(
        "Random CLIP weights, random normalised pixels (decode excluded); FLOPs = FlopCounterMode over one "
        "predict() of batch 1, 2 FLOPs per multiply-add (matmuls, convolutions, attention).\n",
        flush=True,
    )
    for model in args.models.split(","):
        print(f"{model}: counting FLOPs and timing", file=sys.stderr, flush=True)
        print_table(model, bench_model(model, args, peaks), peaks, args.overlap)


if __name__ == "__main__":
    main()
