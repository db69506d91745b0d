"""Serve's shutdown hook on a replica whose constructor failed: nothing was started, nothing raises."""

from __future__ import annotations

from services.serve_app import Inspector


def test_the_shutdown_hook_of_a_replica_that_never_finished_its_constructor_is_quiet() -> None:
    replica_class = Inspector.func_or_class
    half_built = replica_class.__new__(replica_class)  # what Serve holds when __init__ raised on its first line
    half_built.__del__()  # Serve calls it on shutdown; it must not raise (Serve would log a traceback)
