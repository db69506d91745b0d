"""One line, not a traceback, when a command cannot reach Redis (or Redis refuses it), the brokers or Ray.

Why in one place: every command talks to one of the three through several layers (result store, registry,
producer, ``ray.init``), and each client raises its own exception types, without saying which configuration
the address came from. ``main`` turns them into ``zsad: error (unreachable): Redis at host:port ...``.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit


def describe_unreachable(exc: BaseException, args: argparse.Namespace) -> str | None:
    """Which service failed, at which address (from the command's configuration), and the client's reason; None
    when ``exc`` is not a failure to reach one (the clients are imported only here, on the error path)."""
    import kafka.errors
    import redis.exceptions

    reason = str(exc).strip() or type(exc).__name__
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return f"cannot reach Redis at {_redis_address(args)} ({_source(args)}): {reason}"
    if isinstance(exc, redis.exceptions.RedisError):  # reached, but refused: permissions, a full memory, ...
        return f"Redis at {_redis_address(args)} ({_source(args)}) refused the request: {reason}"
    if isinstance(exc, (kafka.errors.KafkaConnectionError, kafka.errors.KafkaTimeoutError)):
        return f"cannot reach the Kafka brokers {_kafka_address(args)} ({_source(args)}): {reason}"
    if isinstance(exc, ConnectionError):  # what ray.init raises where no cluster answers
        address = getattr(args, "address", None)
        return f"cannot connect to {f'Ray at {address}' if address else 'a service'}: {reason}"
    return None


def _config(args: argparse.Namespace) -> Any:
    from services.cli.options import config_from_args
    from zsad_core.errors import ZsadError

    try:
        return config_from_args(args)
    except ZsadError:
        return None


def _source(args: argparse.Namespace) -> str:
    from services.state_home import stack_config_path

    return f"from {getattr(args, 'config', None) or stack_config_path()}"


def _redis_address(args: argparse.Namespace) -> str:
    config = _config(args)
    if config is None:
        return "the configured address"
    parts = urlsplit(config.redis.url)
    return f"{parts.hostname}:{parts.port or 6379}"


def _kafka_address(args: argparse.Namespace) -> str:
    config = _config(args)
    return ", ".join(config.kafka.bootstrap_servers) if config is not None else "(configured)"
