"""``zsad methods``, ``infer``, ``eval``, ``train-local`` and ``reproduce``: the library from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from services.arg_types import finite_float, fraction, non_negative_int, positive_int
from services.cli.options import (
    DeprecatedSpellings,
    add_backbone_options,
    add_device_options,
    add_json_options,
    add_method_options,
    add_training_options,
    announce_random_weights,
    method_from_args,
    resolve_device,
    write_json,
)

# Decoding workers: enough to keep one accelerator fed, never all cores (the model's own threads need some).
DEFAULT_WORKERS = min(4, (os.cpu_count() or 1) // 2)


def register(commands: argparse._SubParsersAction) -> None:
    """Add the inference, evaluation and local-training commands."""
    methods = commands.add_parser("methods", help="list the available methods")
    methods.add_argument("--json", action="store_true", help="print the list as JSON")
    methods.set_defaults(func=cmd_methods)

    infer = commands.add_parser("infer", help="anomaly maps, overlays and scores of image files")
    infer.add_argument("images", nargs="+", help="JPEG/PNG files, or folders (searched recursively)")
    add_method_options(infer)
    infer.add_argument("--out", required=True, help="output directory (maps, overlays, scores.json)")
    infer.add_argument("--contour-level", "--threshold", type=finite_float, dest="contour_level",
                       action=DeprecatedSpellings, deprecated=("--threshold",),
                       help="draw contours where the map >= this level on the overlays")
    infer.add_argument("--json", action="store_true", help="print scores.json on stdout instead of one line each")
    infer.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    infer.set_defaults(func=cmd_infer)

    evaluate = commands.add_parser("eval", help="evaluate a method on a dataset with the papers' metrics")
    add_method_options(evaluate)
    evaluate.add_argument("--dataset", required=True,
                          help="NAME:PATH (mvtec, visa, mpdd, btad, ksdd2, dagm, busi, meta, ...), synthetic[:opts], "
                               "or a bare NAME with --data-root")
    evaluate.add_argument("--data-root", help="the dataset folder, when --dataset is a bare NAME")
    evaluate.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    evaluate.add_argument("--num-workers", type=non_negative_int, default=DEFAULT_WORKERS,
                          help=f"processes decoding images ahead of the model (default {DEFAULT_WORKERS}; 0 inline)")
    evaluate.add_argument("--aupro", choices=["exact", "cflow"], default="exact",
                          help="exact AU-PRO to FPR 0.3, or the papers' 200-threshold variant")
    evaluate.add_argument("--normalize", choices=["none", "per_class_minmax"], default="none",
                          help="per-class min-max of maps and scores (evaluation only, as some papers do)")
    evaluate.add_argument("--resolution", choices=["protocol", "original"], default="protocol",
                          help="metrics at the papers' protocol size, or at each image's original size")
    evaluate.add_argument("--classes", nargs="*", help="only these classes")
    add_json_options(evaluate, "the report")
    evaluate.add_argument("--save-overlays", metavar="DIR", help="write overlays of the worst and best cases here")
    evaluate.add_argument("--overlays-per-kind", type=positive_int, default=3,
                          help="worst and best cases drawn by --save-overlays and --report")
    evaluate.add_argument("--report", help="write ROC/PR/PRO curves, score histograms, overlays and index.html here")
    _add_shot_options(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    train = commands.add_parser("train-local", help="train a learnable method's prompts in this process")
    add_method_options(train, default_method="vcp-clip")
    add_training_options(train, eval_required=False)
    train.add_argument("--out", required=True, help="directory of the new prompt artifact")
    train.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps")
    train.add_argument("--no-augment", action="store_true", help="train without the method's data augmentation")
    train.add_argument("--num-workers", type=non_negative_int, default=DEFAULT_WORKERS,
                       help="processes decoding training images ahead of the optimiser (0 inline)")
    train.set_defaults(func=cmd_train_local)

    reproduce = commands.add_parser("reproduce", help="the papers' protocol on every dataset under a folder, "
                                                      "next to the papers' numbers")
    add_backbone_options(reproduce)
    reproduce.add_argument("--weights", help="prompt artifact to evaluate instead of training one")
    add_device_options(reproduce)
    reproduce.add_argument("--data-root", required=True, help="folder with one sub-folder per dataset (mvtec/ ...)")
    reproduce.add_argument("--datasets", help="comma-separated dataset folders (default: all found)")
    reproduce.add_argument("--epochs", type=positive_int, help="training epochs (default: the method's official)")
    reproduce.add_argument("--max-steps", type=positive_int, help="stop auxiliary training after this many steps")
    reproduce.add_argument("--batch-size", type=positive_int, default=8, help="images per model call")
    add_json_options(reproduce, "the report")
    reproduce.set_defaults(func=cmd_reproduce)


def _add_shot_options(parser: argparse.ArgumentParser) -> None:
    """Few-shot options of ``zsad eval`` (defaults: see ``zsad_core.few_shot``)."""
    shots = parser.add_argument_group("few-shot references (the papers' protocol: k good train images per class)")
    shots.add_argument("--shots", type=non_negative_int, default=0, help="references per class; 0 = zero-shot")
    shots.add_argument("--shot-seed", type=non_negative_int, nargs="+", default=[0], metavar="S",
                       help="seeds of the reference draws; metrics are averaged over them")
    shots.add_argument("--reference-dataset",
                       help="where references are drawn from (default: --dataset with split=train)")
    shots.add_argument("--shot-distance", choices=["cosine", "l2"], default="cosine",
                       help="distance of a patch to its nearest reference patch")
    shots.add_argument("--shot-feature", choices=["raw", "projected"], default="raw",
                       help="residual-stream tokens or joint-space tokens of the method's taps")
    shots.add_argument("--shot-fusion", choices=["mean", "harmonic"], default="mean", help="map fusion")
    shots.add_argument("--shot-score", choices=["mean", "few_shot_max"], default="mean", help="image-score fusion")
    shots.add_argument("--shot-weight", type=fraction, default=0.5, help="few-shot share of both fusions, in [0, 1]")
    shots.add_argument("--max-patches", type=positive_int, default=16384,
                       help="coreset bound of the reference memory (greedy k-center above it)")


def cmd_methods(args: argparse.Namespace) -> int:
    """Print every registered method with whether it learns prompts."""
    from zsad_core.methods import get_method_spec, list_methods

    rows = []
    for name in list_methods():
        spec = get_method_spec(name)
        config = spec.config_cls()
        rows.append({"name": name, "learnable": spec.method_cls.learnable, "backbone": config.backbone,
                     "image_size": config.image_size})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        kind = "learnable" if row["learnable"] else "training-free"
        print(f"{row['name']:<12} {kind:<14} backbone {row['backbone']} @ {row['image_size']}")
    return 0


def cmd_infer(args: argparse.Namespace) -> int:
    """Maps (16-bit PNG scaled to the batch's range), overlays and a JSON of scores for each image."""
    from zsad_core.preprocess import map_to_original, preprocess, read_image
    from zsad_core.visualize import save_overlay

    method = method_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = _infer_inputs(args.images)
    records = []
    for start in range(0, len(inputs), args.batch_size):
        batch = inputs[start : start + args.batch_size]
        images = [read_image(str(path)) for path, _ in batch]
        pixels, geometries = preprocess(images, method.backbone.preprocess_config())
        result = method.predict(pixels)
        for (path, name), image, geometry, anomaly_map, score in zip(
            batch, images, geometries, result.maps.numpy(), result.scores.numpy(), strict=True
        ):
            full = map_to_original(anomaly_map, geometry)
            _write_map_png(out / f"{name}_map.png", full)
            save_overlay(out / f"{name}_overlay.png", image, full, threshold=args.contour_level)
            records.append({"image": str(path), "score": float(score), "map_min": float(full.min()),
                            "map_max": float(full.max())})
            if not args.json:
                print(f"{path}: score {float(score):.4f}")
    scores = {"method": method.name, "backbone": method.backbone.identity,
              "random_weights": method.backbone.source.kind == "random", "results": records}
    write_json(out / "scores.json", scores)
    if args.json:
        print(json.dumps(scores, indent=2))
    return 0


def _infer_inputs(arguments: list[str]) -> list[tuple[Path, str]]:
    """Each image to infer with the name of its outputs: a file's stem, or for a folder's images their path
    inside it (``a/b.png`` -> ``a__b``), so same-named files of two sub-folders do not overwrite each other."""
    from zsad_core.errors import ImageError
    from zsad_core.imageio import image_files

    inputs = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            inputs += [(file, "__".join(file.relative_to(path).with_suffix("").parts))
                       for file in image_files(path, ImageError, recursive=True)]
        else:
            inputs.append((path, path.stem))
    return inputs


def _write_map_png(path: Path, anomaly_map: np.ndarray) -> None:
    import cv2

    low, high = float(anomaly_map.min()), float(anomaly_map.max())
    scaled = (anomaly_map - low) / (high - low) if high > low else np.zeros_like(anomaly_map)
    cv2.imwrite(str(path), np.round(scaled * 65535).astype(np.uint16))


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate, print the papers' table, optionally write JSON and overlays."""
    from tqdm import tqdm

    from zsad_core.data import build_dataset
    from zsad_core.evaluation import evaluate_method

    if args.shots and args.save_overlays:
        print("zsad: --save-overlays draws zero-shot maps; it cannot be combined with --shots", file=sys.stderr)
        return 2
    method = method_from_args(args)
    spec = dataset_spec(args.dataset, args.data_root)
    dataset = build_dataset(spec)
    options = {"batch_size": args.batch_size, "resolution": args.resolution, "aupro_variant": args.aupro,
               "normalize": args.normalize, "classes": args.classes, "num_workers": args.num_workers,
               "curves": bool(args.report)}
    rounds = len(args.shot_seed) if args.shots else 1
    with tqdm(total=len(dataset) * rounds, desc=f"{method.name} on {spec}", unit="img", file=sys.stderr) as bar:
        if args.shots:
            report, runs = _evaluate_shots(args, method, spec, dataset, {**options, "progress": bar.update})
        else:
            run = evaluate_method(method, dataset, progress=bar.update, **options)
            report, runs = run.report, [run]
    few_shot: dict[str, Any] = {}
    if args.shots:
        few_shot = {"shots": args.shots, "shot_seeds": args.shot_seed,
                    "per_seed": {str(seed): run.report.to_dict()["mean"]
                                 for seed, run in zip(args.shot_seed, runs, strict=True)}}
    payload = {"method": method.name, "backbone": method.backbone.identity,
               "random_weights": method.backbone.source.kind == "random", "dataset": spec, **few_shot,
               **report.to_dict()}
    if args.json:
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        print(report.format_table())
        if args.shots:
            print(f"{args.shots} shots, averaged over seeds {args.shot_seed}")
    if args.out:
        write_json(args.out, payload)
    notes = sys.stderr if args.json else sys.stdout  # with --json, stdout holds the JSON alone
    if args.save_overlays:
        _save_extremes(method, dataset, runs[0], Path(args.save_overlays), args.overlays_per_kind)
        print(f"overlays written to {args.save_overlays}", file=notes)
    if args.report:
        from zsad_core.report import write_report

        page = write_report(args.report, runs[0], title=f"{method.name} on {spec}", method=method, dataset=dataset,
                            per_kind=args.overlays_per_kind)
        print(f"report written to {page}", file=notes)
    return 0


def dataset_spec(dataset: str, data_root: str | None) -> str:
    """``NAME:PATH`` from ``--dataset NAME --data-root PATH``, or ``--dataset`` itself when it has no root."""
    from zsad_core.data import DatasetError

    if data_root is None:
        return dataset
    if ":" in dataset:
        raise DatasetError(f"--dataset {dataset!r} already names a path or options; drop --data-root or the suffix")
    return f"{dataset}:{data_root}"


def _evaluate_shots(args: argparse.Namespace, method: Any, spec: str, dataset: Any,
                    options: dict[str, Any]) -> tuple[Any, Any]:
    """The papers' few-shot protocol: references from the train split, one evaluation per seed, averaged."""
    from zsad_core.data import build_dataset
    from zsad_core.evaluation import evaluate_few_shot
    from zsad_core.few_shot import FusionOptions, MemoryOptions

    references = (build_dataset(args.reference_dataset) if args.reference_dataset
                  else build_dataset(spec, split="train"))
    memory = MemoryOptions(feature=args.shot_feature, distance=args.shot_distance, max_patches=args.max_patches)
    fusion = FusionOptions(map_fusion=args.shot_fusion, score_fusion=args.shot_score, weight=args.shot_weight)
    return evaluate_few_shot(method, dataset, references, args.shots, args.shot_seed, memory=memory, fusion=fusion,
                             **options)


def _save_extremes(method: Any, dataset: Any, run: Any, out: Path, k: int) -> None:
    from zsad_core.data import to_protocol
    from zsad_core.evaluation import domain_of
    from zsad_core.visualize import save_overlay, select_extremes

    extremes = select_extremes(run.scores, run.labels, k)
    for kind, picks in (("worst", extremes.worst), ("best", extremes.best)):
        for rank, index in enumerate(picks):
            class_name = run.class_names[index]
            sample = dataset[int(run.indices[index])]
            item = to_protocol(sample, method.image_size)
            method.setup(class_name, domain_of(class_name))
            anomaly_map = method.predict([item.model_image]).maps[0].numpy()
            name = f"{kind}_{rank:02d}_{class_name}_{Path(run.paths[index]).stem}_s{run.scores[index]:.3f}.png"
            save_overlay(out / name, item.model_image, anomaly_map)


def cmd_train_local(args: argparse.Namespace) -> int:
    """Train in this process, save an immutable artifact, optionally evaluate it on held-out data."""
    from tqdm import tqdm

    from zsad_core.artifacts import save_prompts
    from zsad_core.data import build_dataset
    from zsad_core.evaluation import evaluate_method
    from zsad_core.training import TrainingOptions, train_method

    method = method_from_args(args)
    options = TrainingOptions(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                              augment=not args.no_augment, max_steps=args.max_steps, num_workers=args.num_workers)
    dataset = build_dataset(args.train_data)
    epochs = args.epochs or method.config.epochs
    with tqdm(total=epochs * len(dataset), desc=f"train {method.name}", unit="img", file=sys.stderr) as bar:
        history = train_method(method, dataset, options, progress=bar.update,
                               on_epoch_end=lambda log: bar.write(f"epoch {log['epoch']}: loss {log['loss']:.4f}"))
    extra: dict[str, Any] = {"training_data": args.train_data, "history": history}
    if args.eval_data:
        run = evaluate_method(method, build_dataset(args.eval_data))
        print(run.report.format_table())
        extra["metrics"] = {"dataset": args.eval_data, **run.report.to_dict()["mean"]}
    print(f"artifact written to {save_prompts(method, args.out, extra)}")
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Train where the method trains, evaluate everything else, print measured vs paper, optionally JSON."""
    from zsad_core.reproduce import reproduce
    from zsad_core.training import TrainingOptions

    announce_random_weights(args)
    load_options: dict[str, Any] = {"backbone": args.backbone, "pretrained": not args.random_weights,
                                    "backbone_weights": args.backbone_weights, "device": resolve_device(args.device),
                                    "precision": args.precision}
    if args.image_size:
        load_options["image_size"] = args.image_size
    report = reproduce(args.method, args.data_root, weights=args.weights,
                       datasets=args.datasets.split(",") if args.datasets else None, load_options=load_options,
                       training=TrainingOptions(epochs=args.epochs, max_steps=args.max_steps),
                       batch_size=args.batch_size, log=lambda message: print(message, file=sys.stderr))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(report.format_table())
    if args.out:
        write_json(args.out, report.to_dict())
    return 0
