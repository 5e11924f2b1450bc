# SCALE: two commands.
#   make run   - set up, load demo data if none, start local Ray + Serve, print URL and token
#   make test  - set up and run the test suite
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE := token
export RAY_USAGE_STATS_ENABLED := 0
export HF_HUB_OFFLINE := 1

.PHONY: run test setup lint format bench-ingest compact down clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch==2.13.0 first: that exact pin takes the CPU build (no multi-GB CUDA download).
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/scale-ray up --config serve_config.yaml

down: setup
	$(BIN)/scale-ray down

test: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -m "not slow" --durations=15

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench-ingest: setup
	$(BIN)/python benchmarks/ingest.py

bench-analytics: setup
	$(BIN)/python benchmarks/analytics.py

compact: setup
	$(BIN)/python jobs/compact_ledger.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache

.PHONY: bench-categorize
bench-categorize: setup
	$(BIN)/python benchmarks/categorize.py

.PHONY: bench-anomaly eval-anomaly
bench-anomaly: setup
	$(BIN)/python benchmarks/anomaly.py

eval-anomaly: setup
	$(BIN)/python -m scale_ray.models.anomaly.evaluate
