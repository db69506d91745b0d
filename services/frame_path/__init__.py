"""The frame path: a camera frame from a Kafka record to an anomaly map and score in Redis.

A producer (:mod:`.producer`) writes JPEG or PNG records with the headers of :mod:`.records` to the frames
topic. Ingest actors (:mod:`.ingest`, placed and restarted by :mod:`.supervisor`) read their partitions,
decode and validate each record (:mod:`.decoding`), send the frame to the Serve inspector
(:mod:`.serve_app`, :mod:`.inspector`), which batches frames per method, runs the model and writes the map,
score and an event idempotently to Redis (:mod:`.result_store`); then ingest commits the partition's offset
past the highest contiguous finished frame (:mod:`.offsets`). Records that cannot be used go to the
dead-letter topic with their reason. :mod:`.metrics` reports every stage to Ray's Prometheus endpoint, and
:mod:`.frame_readback` reads an original frame back from Kafka for overlays.
"""
