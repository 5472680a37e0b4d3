# fedrouter — the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# gRPC busy in a process that starts Ray can crash the children Ray forks (see fedrouter/cli/__init__.py)
export GRPC_ENABLE_FORK_SUPPORT := 0

.PHONY: setup models data lint format test test-unit test-all demo bench bench-train clean

setup:
	@bash scripts/setup.sh

models: setup
	$(VENV)/bin/fedrouter models prepare

# Real-text corpora from packages (Debian sword-text-kjv/web via apt-get download + dpkg -x), cached
# in $$FEDROUTER_CACHE/data (default ~/.cache/fedrouter/data); idempotent.
data: setup
	$(VENV)/bin/fedrouter data fetch

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: lint
	$(PY) -m pytest tests

test-unit: setup
	$(PY) -m pytest tests -m "not integration and not slow"

test-all: setup
	$(PY) -m pytest tests -m ""

demo: models
	$(VENV)/bin/fedrouter demo

bench: models data
	$(PY) -m benchmarks.run

# Training benchmark: records in benchmarks/results/training_runs.jsonl, then benchmarks/README.md.
# BENCH_ARGS=--quick for the <= 15 min profile.
bench-train: models data
	$(PY) -m benchmarks.training_bench $(BENCH_ARGS)
	$(PY) -m benchmarks.report

clean:
	rm -rf runs .pytest_cache
