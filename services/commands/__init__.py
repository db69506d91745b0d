"""Sub-commands of the ``zsad`` CLI, one module per group; each exposes ``register(subparsers)``."""
