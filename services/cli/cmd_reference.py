"""``zsad reference add|list|show|promote|rollback --camera CAM``: cameras' few-shot reference sets.

A reference set is built from good images of one camera (a folder, or frames an operator marked good), cut and
squashed as the stream's frames are, and registered as version ``r<N>`` of that camera in the reference
registry (:func:`services.stores.artifact_registry.reference_registry`). A camera whose ``references`` names an alias
follows it: the replicas swap the set in between batches when the alias moves.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from services.arg_types import positive_int
from services.cli.cmd_registry import _print_move
from services.cli.options import add_actor_option, add_config_option, config_from_args, resolve_device

if TYPE_CHECKING:
    from services.stores.artifact_registry import ArtifactRegistry


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad reference ...``."""
    reference = commands.add_parser("reference", help="cameras' few-shot reference sets: add, list, show, promote")
    actions = reference.add_subparsers(dest="reference_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="build a reference set from good images and register it (r1, r2, ...)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="folder of good .png/.jpg frames of the camera")
    source.add_argument("--from-marked", type=positive_int, metavar="N",
                        help="the newest N frames marked good (from Kafka)")
    add.add_argument("--promote", choices=["champion", "candidate"], help="point this alias at the new version")
    add.add_argument("--feature", choices=["raw", "projected"], default="raw", help="patch features kept")
    add.add_argument("--distance", choices=["cosine", "l2"], default="cosine", help="nearest-neighbour distance")
    add.add_argument("--max-patches", type=positive_int, default=16384, help="coreset bound of the memory")
    add.add_argument("--device", default="auto",
                     help="torch device of the model: auto (cuda when available, else cpu), cpu, cuda, ...")
    add_actor_option(add)
    add.set_defaults(func=cmd_add)

    listing = actions.add_parser("list", help="the camera's versions, aliases and alias history")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one version's record as JSON, with a check of its files")
    show.add_argument("version", metavar="VERSION_OR_ALIAS", nargs="?", default="champion",
                      help="r1, r2, ... or an alias (default champion)")
    show.set_defaults(func=cmd_show)

    promote = actions.add_parser("promote", help="point an alias (champion by default) at a version")
    promote.add_argument("version", metavar="VERSION_OR_ALIAS", help="r1, r2, ... or an alias")
    promote.add_argument("--alias", choices=["champion", "candidate"], default="champion",
                         help="the alias moved (default champion)")
    promote.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(promote)
    promote.set_defaults(func=cmd_promote)

    rollback = actions.add_parser("rollback", help="point an alias back at the version it held before")
    rollback.add_argument("--alias", choices=["champion", "candidate"], default="champion",
                          help="the alias moved (default champion)")
    rollback.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(rollback)
    rollback.set_defaults(func=cmd_rollback)

    for parser in (add, listing, show, promote, rollback):
        parser.add_argument("--camera", required=True, help="the camera (configured)")
        add_config_option(parser)


@contextmanager
def _open(args: argparse.Namespace) -> Iterator[tuple[Any, ArtifactRegistry]]:
    from services.stores.artifact_registry import reference_registry
    from services.stores.result_store import connect

    config = config_from_args(args)
    config.camera(args.camera)  # an unknown camera is refused before anything is read or written
    client = connect(config.redis)
    try:
        yield config, reference_registry(config, client)
    finally:
        client.close()


def cmd_add(args: argparse.Namespace) -> int:
    """Build, register and optionally promote; refusals (no images, bad images) register nothing."""
    from services.prompt_lifecycle.reference_sets import build_reference_set, images_from_folder, images_from_marked
    from zsad_core.few_shot import MemoryOptions

    options = MemoryOptions(feature=args.feature, distance=args.distance, max_patches=args.max_patches)
    with _open(args) as (config, registry):
        images = (images_from_folder(args.images) if args.images is not None
                  else images_from_marked(config, args.camera, args.from_marked))  # fmt: skip
        entry = build_reference_set(config, args.camera, images, registry, options=options, actor=args.actor,
                                    device=resolve_device(args.device))  # fmt: skip
        print(f"registered {args.camera} {entry.version}: {len(images.names)} images from {images.source}")
        if args.promote:
            _print_move(registry.promote(args.camera, entry.version, alias=args.promote, actor=args.actor,
                                         reason="zsad reference add --promote"))  # fmt: skip
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """One line per version, then each alias's history (oldest first; the last is current)."""
    from services.prompt_lifecycle.reference_sets import alias_history

    with _open(args) as (_, registry):
        entries = registry.list(args.camera)
        aliases = registry.aliases(args.camera)
        histories = {alias: alias_history(registry, args.camera, alias) for alias in aliases}
    if not entries:
        print(f"no reference sets registered for {args.camera}")
    for entry in entries:
        names = ",".join(alias for alias, version in aliases.items() if version == entry.version)
        print(f"{entry.method:<12} {entry.version:<5} {names or '-':<18} {entry.backbone:<28} "
              f"{entry.training_data or '-'}  {entry.registered_at} {entry.created_by}")  # fmt: skip
    for alias, history in histories.items():
        print(f"{alias}: {' -> '.join(history)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The record with its manifest's memory description, aliases, and ``verified``: ``ok`` or why not."""
    from services.stores.artifact_store import CorruptArtifactError

    with _open(args) as (_, registry):
        entry = registry.resolve(args.camera, args.version)
        aliases = [alias for alias, version in registry.aliases(args.camera).items() if version == entry.version]
        try:
            registry.verify(entry)
            verified = "ok"
        except CorruptArtifactError as exc:
            verified = f"{exc.reason}: {exc}"
    record = {**entry.to_dict(), "aliases": aliases, "verified": verified}
    record["camera"] = record.pop("method")
    if verified == "ok":  # the manifest says what the memory holds and what it was built from
        directory = registry.materialise(entry)
        manifest = json.loads((directory / registry.kind.manifest_file).read_text(encoding="utf-8"))
        record["memory"] = {key: manifest.get(key) for key in ("shots", "patches", "feature", "distance", "extra")}
    print(json.dumps(record, indent=2, sort_keys=True))
    return 0 if verified == "ok" else 1


def cmd_promote(args: argparse.Namespace) -> int:
    """Move the alias after checking the set fits the camera's backbone and input size (refusals audited)."""
    from services.prompt_lifecycle.reference_sets import check_fits_camera

    with _open(args) as (config, registry):
        result = registry.promote(args.camera, args.version, alias=args.alias, actor=args.actor, reason=args.reason,
                                  fits=lambda entry: check_fits_camera(entry, config, args.camera))  # fmt: skip
    _print_move(result)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the alias back one step in its history."""
    with _open(args) as (_, registry):
        result = registry.rollback(args.camera, alias=args.alias, actor=args.actor, reason=args.reason)
    _print_move(result)
    return 0
