# Set-up and everyday commands. Every target creates the virtual environment first if needed.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU wheel keeps the install small on machines without a GPU; on a CUDA machine use e.g.
#   make sweep TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
SWEEP ?= experiments/breast_cancer_mlp.yaml
PYTEST_ARGS ?=

.PHONY: install sweep test test-gpu lint bench bench-gpu bench-search bench-warm-start bench-pbt bench-tables bench-experiments clean

install: $(STAMP)

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

sweep: $(STAMP)
	$(VENV)/bin/hypersweep run $(SWEEP)

test: $(STAMP)
	bash scripts/ensure-chromium.sh
	$(VENV)/bin/pytest $(PYTEST_ARGS)

test-gpu: $(STAMP)
	$(VENV)/bin/pytest -m gpu tests/test_gpu.py $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks.run

bench-gpu: $(STAMP)
	$(PY) -m benchmarks.gpu

# Search quality, replayed on the committed tables (benchmarks/tables/): about 10 minutes.
bench-search: $(STAMP)
	$(PY) -m benchmarks.search

# Warm start against cold start for a narrowed follow-up sweep, replayed on the same tables (~1 minute).
bench-warm-start: $(STAMP)
	$(PY) -m benchmarks.warm_start

# Population-based training against ASHA + TPE, real sweeps of the digits CNN (~5 minutes on 2 cores).
bench-pbt: $(STAMP)
	$(PY) -m benchmarks.pbt

# Record the replay tables again (real sweeps, 200 trials each: about 10 minutes on 2 cores).
bench-tables: $(STAMP)
	$(PY) -m benchmarks.tables record

# The shipped sweeps, each run as a user would (the table of results in docs/experiments.md).
bench-experiments: $(STAMP)
	$(PY) -m benchmarks.experiments

clean:
	rm -rf $(VENV) hypersweep_runs mlruns mlartifacts mlflow.db
