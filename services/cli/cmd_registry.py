"""``zsad registry list|show|add|audit``, ``zsad promote`` and ``zsad rollback``: the prompt registry by hand.

The registry's directory and namespace come from the ``registry`` section of the configuration and its Redis
from the ``redis`` section, so these commands act on the same registry as the serving replicas. ``--actor``
(default: the OS user) is written to the audit stream with every change.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from services.arg_types import positive_int
from services.cli.options import add_actor_option, add_config_option, config_from_args

if TYPE_CHECKING:
    from services.stores.artifact_registry import ArtifactRegistry, AuditEntry


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``zsad registry ...``, ``zsad promote`` and ``zsad rollback``."""
    registry = commands.add_parser("registry", help="versioned prompt artifacts: list, show, add, audit")
    actions = registry.add_subparsers(dest="registry_command", metavar="ACTION", required=True)

    listing = actions.add_parser("list", help="registered versions with their aliases and metrics")
    listing.add_argument("--method", help="only this method's versions")
    listing.set_defaults(func=cmd_list)

    show = actions.add_parser("show", help="one version's record as JSON, with a check of its files")
    show.add_argument("method", help="the method the version belongs to")
    show.add_argument("version", metavar="VERSION_OR_ALIAS", help="v1, v2, ... or an alias")
    show.set_defaults(func=cmd_show)

    add = actions.add_parser("add", help="register an artifact directory (copied; the copy is immutable)")
    add.add_argument("artifact_dir", help="a prompt artifact directory (zsad train-local --out)")
    add.add_argument("--training-data", help="what it was trained on (default: the manifest's training_data)")
    add_actor_option(add)
    add.set_defaults(func=cmd_add)

    audit = actions.add_parser("audit", help="the newest audit entries")
    audit.add_argument("-n", type=positive_int, default=20, help="how many entries (newest first)")
    audit.set_defaults(func=cmd_audit)

    promote = commands.add_parser("promote", help="point an alias (champion by default) at a registered version")
    promote.add_argument("method", help="the method whose alias moves")
    promote.add_argument("version", metavar="VERSION_OR_ALIAS", help="v1, v2, ... or an alias")
    promote.add_argument("--alias", choices=["champion", "candidate"], default="champion",
                         help="the alias moved (default champion)")
    promote.add_argument(
        "--if-better-than",
        metavar="VERSION_OR_ALIAS",
        help="refuse unless the version's --metric strictly beats this one's",
    )
    promote.add_argument("--metric", default="pixel_auroc", help="metric compared by --if-better-than")
    promote.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(promote)
    promote.set_defaults(func=cmd_promote)

    rollback = commands.add_parser("rollback", help="point an alias back at the version it held before")
    rollback.add_argument("method", help="the method whose alias moves back")
    rollback.add_argument("--alias", choices=["champion", "candidate"], default="champion",
                          help="the alias moved (default champion)")
    rollback.add_argument("--reason", default="", help="why (audited)")
    add_actor_option(rollback)
    rollback.set_defaults(func=cmd_rollback)

    for parser in (listing, show, add, audit, promote, rollback):
        add_config_option(parser)


@contextmanager
def _open(args: argparse.Namespace) -> Iterator[ArtifactRegistry]:
    from services.stores.artifact_registry import ArtifactRegistry
    from services.stores.result_store import connect

    config = config_from_args(args)
    client = connect(config.redis)
    try:
        yield ArtifactRegistry.from_config(config.registry, client)
    finally:
        client.close()


def cmd_list(args: argparse.Namespace) -> int:
    """One line per version: method, version, aliases, backbone, metrics, registration time and actor."""
    with _open(args) as registry:
        entries = registry.list(args.method)
        aliases = {method: registry.aliases(method) for method in {entry.method for entry in entries}}
    if not entries:
        print("no versions registered" + (f" for {args.method}" if args.method else ""))
    for entry in entries:
        names = ",".join(alias for alias, version in aliases[entry.method].items() if version == entry.version)
        metrics = " ".join(f"{key}={value:.4f}" for key, value in sorted(entry.metrics.items()))
        print(
            f"{entry.method:<10} {entry.version:<5} {names or '-':<18} {entry.backbone:<24} "
            f"{metrics or '-'}  {entry.registered_at} {entry.created_by}"
        )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """The record, the aliases pointing at it, and ``verified``: ``ok`` or why the files are corrupt."""
    from services.stores.artifact_store import CorruptArtifactError

    with _open(args) as registry:
        entry = registry.resolve(args.method, args.version)
        aliases = [alias for alias, version in registry.aliases(entry.method).items() if version == entry.version]
        try:
            registry.verify(entry)
            verified = "ok"
        except CorruptArtifactError as exc:
            verified = f"{exc.reason}: {exc}"
    print(json.dumps({**entry.to_dict(), "aliases": aliases, "verified": verified}, indent=2, sort_keys=True))
    return 0 if verified == "ok" else 1


def cmd_add(args: argparse.Namespace) -> int:
    """Register an artifact directory and print its new version."""
    with _open(args) as registry:
        entry = registry.register(args.artifact_dir, training_data=args.training_data, created_by=args.actor)
    print(f"registered {entry.method} {entry.version}: {entry.location}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The newest audit entries, one line each."""
    with _open(args) as registry:
        entries = registry.audit(args.n)
    for item in entries:
        move = f"{item['from_version'] or '-'} -> {item['to_version'] or '-'}"
        why = "; ".join(part for part in (item["reason"], item["detail"]) if part)
        print(
            f"{item['ts']} {item['action']:<8} {item['outcome']:<11} {item['method']:<10} {item['alias'] or '-':<9} "
            f"{move:<12} by {item['actor']}" + (f": {why}" if why else "")
        )
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Move the alias; a refusal raises (printed by ``zsad`` with its reason, exit status 2)."""
    with _open(args) as registry:
        result = registry.promote(
            args.method,
            args.version,
            alias=args.alias,
            actor=args.actor,
            reason=args.reason,
            if_better_than=args.if_better_than,
            metric=args.metric,
        )
    _print_move(result)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Move the alias back one step in its history."""
    with _open(args) as registry:
        result = registry.rollback(args.method, alias=args.alias, actor=args.actor, reason=args.reason)
    _print_move(result)
    return 0


def _print_move(result: AuditEntry) -> None:
    note = f" ({result.detail})" if result.detail else ""
    print(
        f"{result.method} {result.alias}: {result.from_version or '-'} -> {result.to_version} [{result.outcome}]{note}"
    )
