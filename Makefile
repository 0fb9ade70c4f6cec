# Two entry points for a fresh machine: `make demo` (or `make run RUN=DIR`) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch for tests; the project itself accepts any torch (bring your CUDA build).
TORCH_FOR_TESTS ?= torch==2.13.0

.PHONY: demo run test test-fast lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH_FOR_TESTS)"
	$(BIN)/pip install -q -e ".[dev,compare]"
	touch $@ $(VENV)/.core

$(VENV)/.demo: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[compare]"
	touch $@ $(VENV)/.core

# About two minutes: a real tiny training run under the daemon, every feature shown as it happens.
demo: $(VENV)/.demo
	$(BIN)/tunewatch demo

# Watch a real run directory: make run RUN=~/runs/my-finetune
run: $(VENV)/.core
	$(BIN)/tunewatch run $(RUN)

# Everything CI runs, slow end-to-end tests included.
test: $(VENV)/.dev
	$(BIN)/pytest -m "slow or not slow"

test-fast: $(VENV)/.dev
	$(BIN)/pytest

lint: $(VENV)/.dev typecheck
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# mypy cannot follow setuptools' package-dir mapping, so give it the installed layout.
typecheck: $(VENV)/.dev
	@mkdir -p build/typecheck/tunewatch
	@ln -sfn ../../../daemon build/typecheck/tunewatch/daemon
	@ln -sfn ../../../plugins build/typecheck/tunewatch/plugins
	MYPYPATH=build/typecheck $(BIN)/mypy -p tunewatch.daemon -p tunewatch.plugins
	MYPYPATH=build/typecheck:tests:bench $(BIN)/mypy tests bench

bench: $(VENV)/.dev
	$(BIN)/python bench/tail_latency.py
	$(BIN)/python bench/catchup_throughput.py
	$(BIN)/python bench/idle_footprint.py
	$(BIN)/python bench/anomaly_quality.py
	$(BIN)/python bench/validate_throughput.py --repeat 2

clean:
	rm -rf build .mypy_cache .pytest_cache .ruff_cache
