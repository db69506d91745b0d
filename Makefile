# The two commands of the README. Each bootstraps what it needs (scripts/bootstrap.sh is idempotent): the demo
# only its runtime packages, every other target also the test-only ones.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap bootstrap-demo demo test test-fast lint bench

bootstrap-demo:
	@VENV=$(VENV) bash scripts/bootstrap.sh demo

bootstrap:
	@VENV=$(VENV) bash scripts/bootstrap.sh test

demo: bootstrap-demo
	@$(VENV)/bin/zsad demo

# The whole suite, one process (docs/testing.md says why not two workers yet); the 20 slowest tests printed at the end.
test: bootstrap
	@$(PY) -m pytest -q --durations=20

# The inner loop: every test that starts no service and uses no real-size model.
test-fast: bootstrap
	@$(PY) -m pytest -q -n 2 -m "not integration and not slow" --durations=10

# ruff, then the import contracts of pyproject.toml: a module importing a layer above its own fails here.
lint: bootstrap
	@$(VENV)/bin/ruff check zsad_core services tests benchmarks scripts
	@$(VENV)/bin/lint-imports --no-cache

bench: bootstrap
	@$(PY) -m benchmarks.bench_metrics && $(PY) -m benchmarks.bench_methods && $(PY) -m benchmarks.bench_pipeline
