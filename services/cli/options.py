"""Options shared by the commands that load a method."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_backbone_options(parser: argparse.ArgumentParser, default_method: str = "winclip") -> None:
    """``--method`` and the backbone it runs on: the options every command that builds a method has."""
    parser.add_argument("--method", default=default_method, help="method name (zsad methods lists them)")
    parser.add_argument("--backbone", help="CLIP backbone arch[:tag] instead of the method's official one")
    parser.add_argument("--backbone-weights", help="local CLIP weight file (.safetensors preferred)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random CLIP weights, said on every output (for smoke tests: maps are not meaningful); "
                             "without it an untagged backbone needs --backbone-weights")
    parser.add_argument("--image-size", type=int, help="model input size instead of the method's official one")


def add_method_options(parser: argparse.ArgumentParser, default_method: str = "winclip") -> None:
    """The backbone options plus weights and prompt options, identical for infer, eval and train-local."""
    add_backbone_options(parser, default_method)
    parser.add_argument("--weights", help="prompt artifact directory of a learnable method")
    parser.add_argument("--class-name", default="object", help="product name for class-aware prompts")
    parser.add_argument("--domain", choices=["object", "texture"], default="object")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a method config field (JSON value), repeatable")


def add_training_options(parser: argparse.ArgumentParser, *, eval_required: bool) -> None:
    """The data and loop options of ``zsad train`` and ``zsad train-local``, with the same names in both.

    Why the aliases: ``--dataset``/``--eval-dataset`` were ``train-local``'s names before the two commands shared
    their options; command lines written then still work.
    """
    parser.add_argument("--train-data", "--dataset", dest="train_data", required=True,
                        help="auxiliary training data with masks (dataset spec)")
    parser.add_argument("--eval-data", "--eval-dataset", dest="eval_data", required=eval_required,
                        help="held-out data evaluated after training (dataset spec; metrics go in the manifest)")
    parser.add_argument("--epochs", type=int, help="default: the method's official number")
    parser.add_argument("--batch-size", type=int, help="batch size (per worker) instead of the official one")
    parser.add_argument("--seed", type=int, help="default: the method's seed")


RANDOM_WEIGHTS_WARNING = "RANDOM CLIP WEIGHTS (--random-weights): the scores and maps test the pipeline, not parts"


def announce_random_weights(args: argparse.Namespace) -> None:
    """Say first, on stderr, that a run uses random weights: its numbers look like results and are not."""
    if args.random_weights:
        print(f"zsad: {RANDOM_WEIGHTS_WARNING}", file=sys.stderr, flush=True)


def method_from_args(args: argparse.Namespace) -> Any:
    """Load the method described by :func:`add_method_options` arguments."""
    from zsad_core import load_method

    announce_random_weights(args)
    overrides: dict[str, Any] = {}
    for item in args.option:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.image_size:
        overrides["image_size"] = args.image_size
    return load_method(
        args.method,
        backbone=args.backbone,
        weights=args.weights,
        pretrained=not args.random_weights,
        backbone_weights=args.backbone_weights,
        class_name=args.class_name,
        domain=args.domain,
        device=args.device,
        **overrides,
    )


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, creating the parent directory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config``: the system's YAML file (see :func:`config_from_args` for the default)."""
    parser.add_argument("--config", help="configuration YAML (default: the running local stack's, "
                                         "$ZSAD_HOME/stack/config.yaml)")


def config_from_args(args: argparse.Namespace) -> Any:
    """The configuration a command works on.

    Why the local stack's file is the default: ``zsad up`` starts Redis and the broker on free ports with a kept
    password and writes the effective configuration into the state home (mode 0600); ``zsad produce``,
    ``results`` and ``show`` must then talk to those, from any directory, without the user copying ports and
    secrets around. Without either, the embedded defaults would point at a Redis without a password: an error.
    """
    from services.config import ConfigError, load_config
    from services.state_home import HOME_ENV, stack_config_path

    if getattr(args, "config", None):
        return load_config(args.config)
    if stack_config_path().is_file():
        return load_config(stack_config_path())
    raise ConfigError(f"no --config given and no local stack config at {stack_config_path()}: start the stack "
                      f"(zsad up), pass --config FILE, or point {HOME_ENV} / --state-dir at the stack's state home")
