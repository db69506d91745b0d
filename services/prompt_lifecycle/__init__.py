"""The prompt lifecycle: learnable prompts from a training job to the replicas that serve them (runtime layer).

A Ray Train job (:mod:`.training_job`) trains a method's prompts on auxiliary data and writes an artifact;
the registry (:mod:`services.stores.artifact_registry`) keeps it as an immutable, hash-checked version and moves
aliases (``candidate``, ``champion``) with history and an audit trail, announcing each move on Redis pub/sub.
Every serving replica runs a follower (:mod:`.hot_swap`) that loads the version an alias points to in the
background and swaps it in between batches; :mod:`.reference_sets` builds and registers few-shot reference sets.
:mod:`services.stores.schedules` holds cron schedules of retraining commands, and :mod:`.scheduler_actor` is the
detached Ray actor that submits them as Ray Jobs when due.
"""
