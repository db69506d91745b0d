# The two commands of the README. Each bootstraps what it needs (scripts/bootstrap.sh is idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap demo test lint bench

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(VENV)/bin/zsad demo

test: bootstrap
	@$(PY) -m pytest -q

lint: bootstrap
	@$(VENV)/bin/ruff check zsad_core services tests benchmarks scripts

bench: bootstrap
	@$(PY) -m benchmarks.bench_metrics && $(PY) -m benchmarks.bench_methods && $(PY) -m benchmarks.bench_pipeline
