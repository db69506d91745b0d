# The two commands of the README. Each bootstraps what it needs (scripts/bootstrap.sh is idempotent): the demo
# only its runtime packages, every other target also the test-only ones.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: bootstrap bootstrap-demo bytecode demo test test-fast lint bench

bootstrap-demo:
	@VENV=$(VENV) bash scripts/bootstrap.sh demo

bootstrap:
	@VENV=$(VENV) bash scripts/bootstrap.sh test

# Byte-compile the project: every Ray worker imports it, and where PYTHONDONTWRITEBYTECODE is set (the project's
# machines set it) each process compiled its 28,000 lines again, about 0.9 s of CPU per replica. Up to date: 0.1 s.
bytecode:
	@$(PY) -m compileall -q zsad_core services

demo: bootstrap-demo bytecode
	@$(VENV)/bin/zsad demo

# The whole suite: two workers on the integration files (whole files, longest first) and a third on the files that
# start no Ray: the gateway's, then the unit tests at low priority (tests/scheduling.py, docs/testing.md); the 20
# slowest tests at the end.
test: bootstrap bytecode
	@$(PY) -m pytest -q -n 3 --dist loadfile --no-loadscope-reorder --durations=20

# The inner loop: every test that starts no service and uses no real-size model.
test-fast: bootstrap bytecode
	@$(PY) -m pytest -q -n 2 -m "not integration and not slow" --durations=10

# ruff, then the import contracts of pyproject.toml: a module importing a layer above its own fails here.
lint: bootstrap
	@$(VENV)/bin/ruff check zsad_core services tests benchmarks scripts
	@$(VENV)/bin/lint-imports --no-cache

bench: bootstrap
	@$(PY) -m benchmarks.bench_metrics && $(PY) -m benchmarks.bench_methods && $(PY) -m benchmarks.bench_pipeline
