"""Stores: what the system keeps in Redis, Kafka and the artifact store; no threads, no Ray."""
