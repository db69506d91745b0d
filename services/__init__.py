"""The running system around ``zsad_core``, one package per path that data takes.

* :mod:`services.frame_path`: a camera frame's way from Kafka to a stored anomaly map (records, decoding,
  ingest, offsets, supervisor, the Serve inspector, the Redis result store, metrics, producer, read-back).
* :mod:`services.prompt_lifecycle`: a learnable prompt's way from a training job through the versioned
  registry into serving replicas (registry, hot-swap followers, Ray Train job, schedules and their actor).
* :mod:`services.cli`: the ``zsad`` command line, a thin layer over the two paths above.
* :mod:`services.local_stack`: the one-machine stack that ``zsad up`` runs (Redis, a Kafka-protocol broker,
  Ray and the Serve application) for demos, development and the integration tests.

:mod:`services.config` is the one configuration file that every path reads; :mod:`services.audit_log` (the one
writer of the operators' audit stream) and :mod:`services.backoff` (the one retry backoff) sit beside it. Lower
layers never import higher ones: the paths import ``zsad_core`` and ``services.config``, the local stack imports the
frame path, and only the command line imports everything.
"""
