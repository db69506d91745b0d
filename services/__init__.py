"""The running system around zsad_core: ingest, serving, result store, registry, retraining, CLI."""
