"""Stores: what the system keeps, read and written without threads or Ray (the layer above contracts and config).

:mod:`.result_store` (results, maps, event streams and scores in Redis), :mod:`.frame_readback` (one frame read
back from Kafka), :mod:`.artifact_registry` (versioned prompts and reference sets) and :mod:`.artifact_store`
(their files, checked against the registry's records), :mod:`.camera_settings` (live settings and calibration
records), :mod:`.operator_marks` (results marked good or bad) and :mod:`.schedules` (retraining schedules). The
threads and actors that use them (ingest, the replicas and their followers, the scheduler) are in the runtime
layer above.
"""
