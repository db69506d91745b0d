"""The frame path: a camera frame from a Kafka record to an anomaly map and score in Redis (runtime layer).

A producer (:mod:`.producer`) writes JPEG or PNG records with the headers of :mod:`services.records` to the
frames topic. Ingest actors (:mod:`.ingest_actor`, placed and restarted by :mod:`.supervisor`) run the ingest loop
(:mod:`.ingest_loop`): it reads their partitions (:mod:`.kafka_reader`), decodes and validates each record
(:mod:`.decoding`), sends the frame to the inspector replicas (:mod:`.inspector`, deployed by
:mod:`services.serve_app`), which batch frames per method, run the model and write the map, score and an event
idempotently to Redis (:mod:`services.stores.result_store`); then ingest commits the partition's offset past the
highest contiguous finished frame (:mod:`.offsets`, :mod:`.commit_ledger`). Records that cannot be used go to the
dead-letter topic with their reason (:mod:`.dead_letter_sender`; operators read and resend them with
:mod:`.dead_letters`). Each replica keeps a drift window per calibrated camera (:mod:`.drift_watch`) and
follows the cameras' live settings (:mod:`.settings_follower`). :mod:`.metrics` reports every stage to Ray's
Prometheus endpoint.
"""
