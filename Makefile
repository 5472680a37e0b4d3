# fedrouter — the two commands a newcomer needs are `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup models lint format test test-unit test-all demo bench clean

setup:
	@bash scripts/setup.sh

models: setup
	$(VENV)/bin/fedrouter models prepare

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

bench: models
	$(PY) -m benchmarks.run

clean:
	rm -rf runs .pytest_cache
