"""Options shared by several commands: the method and backbone, devices, Ray's address, deprecated spellings."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.arg_types import non_negative_int, positive_int

PRECISIONS = ("fp32", "bf16", "fp16", "amp_bf16", "amp_fp16")


class DeprecatedSpellings(argparse.Action):
    """An option some of whose names are old spellings, kept for one release: they work, and warn on stderr."""

    def __init__(self, option_strings: list[str], dest: str, deprecated: tuple[str, ...], **kwargs: Any) -> None:
        self.deprecated = deprecated
        current = [name for name in option_strings if name not in deprecated]
        self.replacement = current[0] if current else kwargs.pop("replacement")
        help_text = kwargs.pop("help", "")
        kwargs["help"] = f"{help_text} ({', '.join(deprecated)}: deprecated, use {self.replacement})".lstrip()
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string in self.deprecated:
            print(f"zsad: warning: {option_string} is deprecated, use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def add_address_option(parser: argparse.ArgumentParser, help_text: str, old: str = "--ray-address") -> None:
    """``--address``, the Ray cluster (or its dashboard) as ``ray`` itself spells it, with ``old`` deprecated."""
    parser.add_argument("--address", old, dest="address", action=DeprecatedSpellings, deprecated=(old,),
                        help=help_text)


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` (``auto``: the GPU when there is one) and ``--precision`` of the backbone."""
    parser.add_argument("--device", default="auto",
                        help="torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ...")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="backbone precision: fp32; bf16/fp16 cast the weights; amp_* run under autocast")


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when torch sees a GPU, else ``cpu``; anything else is used as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _JsonSwitch(argparse.Action):
    """``--json``: JSON on stdout. ``--json FILE`` (what it meant on eval and reproduce) still writes FILE, warned."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if values is None:
            namespace.json = True
            return
        print(f"zsad: warning: --json FILE is deprecated, use --out {values} (--json alone prints JSON)",
              file=sys.stderr)
        namespace.out = values


def add_json_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--json`` (``what`` as JSON on stdout, instead of the table) and ``--out FILE`` (the same JSON to a file)."""
    parser.add_argument("--json", nargs="?", default=False, action=_JsonSwitch, metavar="FILE",
                        help=f"print {what} as JSON on stdout instead of the table (a FILE is the deprecated "
                             "spelling of --out FILE)")
    parser.add_argument("--out", metavar="FILE", help=f"also write {what} as JSON to FILE")


def add_backbone_options(parser: argparse.ArgumentParser, default_method: str = "winclip") -> None:
    """``--method`` and the backbone it runs on: the options every command that builds a method has."""
    parser.add_argument("--method", default=default_method, help="method name (zsad methods lists them)")
    parser.add_argument("--backbone", help="CLIP backbone arch[:tag] instead of the method's official one")
    parser.add_argument("--backbone-weights", help="local CLIP weight file (.safetensors preferred)")
    parser.add_argument("--random-weights", action="store_true",
                        help="random CLIP weights, said on every output (for smoke tests: maps are not meaningful); "
                             "without it an untagged backbone needs --backbone-weights")
    parser.add_argument("--image-size", type=positive_int,
                        help="model input size instead of the method's official one")


def add_method_options(parser: argparse.ArgumentParser, default_method: str = "winclip") -> None:
    """The backbone options plus weights and prompt options, identical for infer, eval and train-local."""
    add_backbone_options(parser, default_method)
    parser.add_argument("--weights", help="prompt artifact directory of a learnable method, or official:FILE")
    parser.add_argument("--class-name", default="object", help="product name for class-aware prompts")
    parser.add_argument("--domain", choices=["object", "texture"], default="object",
                        help="object or texture prompts (AnoCLIP's domain-aware prompts)")
    add_device_options(parser)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="override a method config field (JSON value), repeatable")


def add_training_options(parser: argparse.ArgumentParser, *, eval_required: bool) -> None:
    """The data and loop options of ``zsad train`` and ``zsad train-local``, with the same names in both.

    Why the aliases: ``--dataset``/``--eval-dataset`` were ``train-local``'s names before the two commands shared
    their options; they mean evaluation data on ``eval``, so they are deprecated here.
    """
    parser.add_argument("--train-data", "--dataset", dest="train_data", required=True, action=DeprecatedSpellings,
                        deprecated=("--dataset",), help="auxiliary training data with masks (dataset spec)")
    parser.add_argument("--eval-data", "--eval-dataset", dest="eval_data", required=eval_required,
                        action=DeprecatedSpellings, deprecated=("--eval-dataset",),
                        help="held-out data evaluated after training (dataset spec; metrics go in the manifest)")
    parser.add_argument("--epochs", type=positive_int, help="default: the method's official number")
    parser.add_argument("--batch-size", type=positive_int, help="batch size (per worker) instead of the official one")
    parser.add_argument("--seed", type=non_negative_int, help="default: the method's seed")


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
        device=resolve_device(args.device),
        precision=args.precision,
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


def add_actor_option(parser: argparse.ArgumentParser, who: str = "who acts, for the audit") -> None:
    """``--actor``, defaulting to the OS user: every command that writes the audit stream names who acted."""
    parser.add_argument("--actor", default=os_user(), help=f"{who} (default: the OS user)")


def os_user() -> str:
    """The login name, or ``unknown`` where a container has none."""
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment and no passwd entry (some containers)
        return "unknown"
