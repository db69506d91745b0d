"""The running system around ``zsad_core``, in four layers; a module imports only its own layer and those below.

* **Composition**: what knows the whole application. :mod:`services.cli` (the ``zsad`` command line),
  :mod:`services.local_stack` (the one-machine stack of ``zsad up``: Redis, a Kafka-protocol broker, Ray and the
  Serve application), :mod:`services.serve_app` (the Serve application that wires every deployment) and
  :mod:`services.replay` (re-scoring frames through that application).
* **Runtime**: what runs. :mod:`services.frame_path` (ingest, the inspector replica, its settings follower, drift),
  :mod:`services.prompt_lifecycle` (training, hot swap, reference sets, the scheduler actor),
  :mod:`services.decisions` (calibration), :mod:`services.operator_view` (the web view),
  :mod:`services.read_models` (what the view and :mod:`services.client`, the Python client, read),
  :mod:`services.gateway` (cameras into Kafka) and :mod:`services.event_follower` (the followers' loop).
* **Stores**: :mod:`services.stores`, what the system keeps (results, frames read back, the registry and its
  artifacts, camera settings, operator marks, schedules), with no threads and no Ray.
* **Contracts and config**: :mod:`services.records` (the frame record format), :mod:`services.config` (the one
  configuration file every layer reads), :mod:`services.audit_log` (the one writer of the operators' audit
  stream), and :mod:`services.config_reference`, :mod:`services.backoff`, :mod:`services.arg_types`,
  :mod:`services.state_home`.

No two packages or modules here import each other, and ``zsad_core`` imports nothing from here. ``make lint``
checks the layers and the cycles (import-linter, ``[tool.importlinter]`` in ``pyproject.toml``; docs/architecture.md
shows them).
"""
