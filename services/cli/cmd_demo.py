"""``zsad demo``: the README's main command.

By default it runs the product end to end on embedded defaults: ``zsad up`` (Redis, the noida-db broker, a
Ray head with the dashboard, the Serve app); then it calibrates every camera as ``zsad calibrate`` does, on good
frames of the synthetic product the camera shows (so that its decisions rest on a threshold measured on its own
goods, not on the configuration's placeholder); then synthetic frames from every configured camera through
Kafka, and a live summary from Redis (frames/s, anomalies, latency percentiles) until every frame has its result;
then it stops the stack it started (``--keep`` leaves it running for ``zsad results``/``show``).

``--offline`` shows the library alone: two methods on one backbone over synthetic frames, metrics and
overlays on disk. No weights can be downloaded on the project's machines, so both use random CLIP weights
unless a weight file is configured; the maps then show the pipeline working, not a trained detector.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.arg_types import non_negative_float, non_negative_int, positive_int

if TYPE_CHECKING:
    from services.config import ZsadConfig
    from services.stores.camera_settings import CalibrationRecord, CameraSettingsStore

OFFLINE_METHODS = ("winclip", "clip-ad")
SUMMARY_EVERY_S = 2.0
DEMO_TIMEOUT_S = 900.0
CALIBRATION_FRAMES = 16
# Who the demo's calibrations are recorded as: the demo recalibrates only cameras it calibrated itself.
DEMO_ACTOR = "zsad demo"


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad demo``."""
    demo = commands.add_parser("demo", help="run the main job on embedded defaults (synthetic frames)")
    demo.add_argument("--frames", type=positive_int, help="synthetic frames per camera (default 100; offline: 8)")
    demo.add_argument("--fps", type=non_negative_float, default=0.0,
                      help="frames per second per camera (0: all at once)")
    demo.add_argument("--calibration-frames", type=non_negative_int, default=CALIBRATION_FRAMES, metavar="N",
                      help=f"good synthetic frames each camera is calibrated on before the stream (default "
                           f"{CALIBRATION_FRAMES}; 0: decide with the configured thresholds)")  # fmt: skip
    demo.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    demo.add_argument("--config", help="configuration YAML (default: the embedded defaults)")
    demo.add_argument("--offline", action="store_true", help="the library only: no Kafka, Ray or Redis")
    demo.add_argument("--out", default="runs/demo", help="offline: where overlays go")
    demo.add_argument("--backbone", default="ViT-B-16-plus-240", help="offline: CLIP architecture")
    demo.add_argument("--backbone-weights", help="offline: local CLIP weight file (default random weights)")
    demo.add_argument("--image-size", type=positive_int, default=240, help="offline: model input size")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """The streaming demo, or the offline one with ``--offline``."""
    if args.offline:
        return _offline(args, frames=args.frames or 8)
    return _stream(args, frames=args.frames or 100)


def _stream(args: argparse.Namespace, frames: int) -> int:
    from services.cli.cmd_stack import SERVING_RANDOM_WEIGHTS
    from services.cli.summaries import camera_summaries, format_progress, format_stack_state, format_summary, redraw
    from services.config import load_config
    from services.frame_path.producer import stream_synthetic
    from services.local_stack.control import running_stack, start_stack, stop_stack
    from services.state_home import stack_config_path, stack_dir
    from services.stores.result_store import ResultStore

    state = running_stack(stack_dir())
    started_here = state is None or state.status == "failed"
    planned = load_config(Path(args.config) if args.config else None) if started_here else load_config(
        stack_config_path())
    if planned.serving.random_weights:  # said before anything else: every number below would otherwise mislead
        print(f"zsad: {SERVING_RANDOM_WEIGHTS}; the demo shows the pipeline working, not a detector", flush=True)
    if started_here:
        print("starting the local stack ...", flush=True)
        print(format_stack_state(start_stack(Path(args.config) if args.config else None, stack_dir=stack_dir())))
    else:
        print("using the running local stack")
    try:
        config = load_config(stack_config_path())
        store = ResultStore.from_config(config)
        cameras = list(config.cameras)
        if args.calibration_frames:
            calibrate_demo_cameras(config, cameras, args.calibration_frames)
        before = {row.camera: row.frames for row in camera_summaries(store, cameras)}
        print(f"\nproducing {frames} synthetic frames for each of {', '.join(cameras)} "
              f"({', '.join(config.cameras[c].method for c in cameras)}) ...")  # fmt: skip

        stream_synthetic(config, cameras, frames, args.fps)
        started = time.monotonic()
        last = dict(before)
        last_time = started
        drawn = 0
        while True:
            time.sleep(SUMMARY_EVERY_S)
            rows = camera_summaries(store, cameras)
            now = time.monotonic()
            rates = {row.camera: (row.frames - last[row.camera]) / (now - last_time) for row in rows}
            last, last_time = {row.camera: row.frames for row in rows}, now
            done = sum(min(row.frames - before[row.camera], frames) for row in rows)
            view = f"{format_progress(done, frames * len(cameras), now - started)}\n{format_summary(rows, rates)}"
            drawn = redraw(sys.stdout, view, drawn)
            if all(row.frames - before[row.camera] >= frames for row in rows):
                break
            if now - started > DEMO_TIMEOUT_S:
                print(f"gave up waiting after {DEMO_TIMEOUT_S:.0f} s (see `zsad status`)")
                return 1
        total = sum(last[camera] - before[camera] for camera in cameras)
        elapsed = time.monotonic() - started
        print(f"\n{total} frames scored and stored in {elapsed:.0f} s ({total / elapsed:.1f} frames/s end to end)")
        state = running_stack(stack_dir())
        if state is not None:
            print(f"Ray dashboard: {state.dashboard_url} (Serve app, ingest actors, metrics)")
            print(f"web view: {state.serve_url} (log in with a token from {state.config_path}, section view)")
        print(f"look closer: zsad results --camera {cameras[0]} --worst 5; zsad show --camera {cameras[0]} "
              f"--frame ID --out overlay.png" + ("" if args.keep or not started_here else " (with --keep)"))
        return 0
    finally:
        if started_here and not args.keep:
            stop_stack(stack_dir())
            print("stopped the local stack")


def calibrate_demo_cameras(config: ZsadConfig, cameras: list[str], count: int) -> None:
    """Calibrate every camera on ``count`` good synthetic frames, one line per camera updated in place.

    A camera whose current calibration someone else made keeps it: the demo may run on a stack whose cameras
    were calibrated on real goods. The demo's own calibrations are redone, since the weights may have changed.
    """
    from services.cli.options import resolve_device
    from services.cli.summaries import redraw
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.camera_settings import CameraSettingsStore
    from services.stores.result_store import connect

    client = connect(config.redis)
    try:
        store = CameraSettingsStore(ArtifactRegistry.from_config(config.registry, client), config)
        kept = {camera: store.settings(camera) for camera in cameras}
        kept = {camera: settings for camera, settings in kept.items() if settings.calibration is not None
                and store.calibration(camera, settings.calibration).created_by != DEMO_ACTOR}  # fmt: skip
        lines = {camera: f"{camera:<16}calibrating on {count} good synthetic frames ..." for camera in cameras}
        for camera, settings in kept.items():
            lines[camera] = f"{camera:<16}keeps calibration {settings.calibration}: threshold {settings.threshold:.4g}"
        print("\ncalibrating the cameras as `zsad calibrate` does:")
        drawn = redraw(sys.stdout, "\n".join(lines.values()), 0)
        device = resolve_device("auto")
        for camera in (camera for camera in cameras if camera not in kept):
            was = store.settings(camera).threshold
            record = calibrate_on_synthetic_goods(store, camera, count, device)
            lines[camera] = (f"{camera:<16}calibration {record.version} on {count} good synthetic frames: threshold "
                             f"{record.image_threshold:.4g} (was {was:.4g})")  # fmt: skip
            drawn = redraw(sys.stdout, "\n".join(lines.values()), drawn)
    finally:
        client.close()


def calibrate_on_synthetic_goods(
    store: CameraSettingsStore, camera: str, count: int, device: str
) -> CalibrationRecord:
    """Calibrate ``camera`` as ``zsad calibrate --good DIR`` does, on ``count`` good frames of the synthetic
    product it streams, JPEG-encoded as the stream sends them, and store the record: the camera's replicas then
    decide with its thresholds.

    Why good frames the stream never sends (the product's train split): a threshold judged on the very frames it
    then decides would look better than it is.
    """
    from services.decisions.calibration import calibrate_camera
    from services.frame_path.producer import camera_product, camera_seed
    from zsad_core.imageio import encode_jpeg

    goods = camera_product(camera, count, seed=camera_seed(camera), anomaly_ratio=0.0, split="train")
    with tempfile.TemporaryDirectory(prefix="zsad-demo-goods-") as folder:
        for index in range(len(goods)):
            (Path(folder) / f"good-{index:03d}.jpg").write_bytes(encode_jpeg(goods[index].image))
        decision = calibrate_camera(store, camera, good=folder, device=device)
    record, _ = store.record_calibration(
        camera,
        image_threshold=decision.image.threshold,
        pixel_threshold=decision.pixel.threshold,
        evidence=decision.evidence,
        actor=DEMO_ACTOR,
        reason=f"{count} good synthetic frames of the camera's product, before the demo's stream",
    )
    return record


def _offline(args: argparse.Namespace, frames: int) -> int:
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
    dataset = SyntheticDataset(seed=7, classes=2, per_class=max(2, frames // 2), size=args.image_size)
    for name in OFFLINE_METHODS:
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
