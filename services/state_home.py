"""The one directory where zsad keeps state: the local stack, and the registry's relative paths.

Why one home instead of the working directory: ``zsad up`` writes the effective configuration (Redis password,
view tokens, ports) into its stack directory, and every later command must find it from wherever it is run.
The home is ``$ZSAD_HOME`` (``zsad --state-dir`` sets it for one command and everything it starts), else
``$XDG_STATE_HOME/zsad``, else ``~/.local/state/zsad`` (the XDG default for state).
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "ZSAD_HOME"
STACK_NAME = "stack"
STACK_CONFIG_NAME = "config.yaml"


def state_home() -> Path:
    """The state directory for this process (read from the environment on every call, never cached)."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().absolute()
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg).expanduser() if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "zsad"


def stack_dir() -> Path:
    """Where ``zsad up`` keeps the local stack's state, effective configuration, Redis data and log."""
    return state_home() / STACK_NAME


def stack_config_path() -> Path:
    """The running local stack's effective configuration (mode 0600: it holds the Redis password)."""
    return stack_dir() / STACK_CONFIG_NAME


def in_state_home(location: str) -> str:
    """A registry location with a relative path anchored in the state home; absolute paths and URLs unchanged."""
    if "://" in location:
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else state_home() / path)
