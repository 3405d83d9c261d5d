# Two commands on a fresh machine: `make demo` and `make test`. Everything else is optional.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS ?= dev,dvc,flows,dashboard
DEMO ?= results/demo
DEMO_EVALS ?= 8
# the demo repeats one run; a plain `tcr-pipeline pipeline` draws a new seed per run
DEMO_SEED ?= 42
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: demo dashboard single baseline deploy worker test lint format repro bench constraints clean paper

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian, apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip

# The CPU build of torch is pinned here and in the constraints; the package accepts any torch>=2.2.
$(STAMP): pyproject.toml requirements/constraints.txt | $(BIN)/python
	$(BIN)/pip install -q -c requirements/constraints.txt "torch==2.13.0" -e ".[$(EXTRAS)]"
	$(BIN)/pip check
	touch $@

## demo: the whole pipeline flow (prepare -> search -> promote) on a local Dask cluster, no GPU
demo: $(STAMP)
	tcr-pipeline pipeline --prepared $(DEMO)/prepared --store $(DEMO)/store --max-evals $(DEMO_EVALS) --seed $(DEMO_SEED)
	tcr-pipeline best --store $(DEMO)/store
	@echo "results: $(DEMO)/store (runs/<run>/trials/*/*/trial.json, models, registry.json); docs/store.md"

## dashboard: the web dashboard over the demo store (http://127.0.0.1:8050; dashboard/README.md)
dashboard: $(STAMP)
	tcr-pipeline dashboard --store $(DEMO)/store

## single: one model, prepare -> train -> evaluate, without Prefect
single: $(STAMP)
	tcr-pipeline prepare --out $(DEMO)/prepared
	tcr-pipeline train --prepared $(DEMO)/prepared --out $(DEMO)/model
	tcr-pipeline evaluate --model $(DEMO)/model --prepared $(DEMO)/prepared --metrics $(DEMO)/metrics.json --write-card

## test: the fast suite plus every marked test whose service is present (SLURM, browser)
test: $(STAMP)
	$(BIN)/python -m pytest

## lint: ruff, the format, mypy, and the layers (import-linter contracts in pyproject.toml)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## repro: the DVC pipeline (prepare -> train -> evaluate), offline
repro: $(STAMP)
	dvc repro

## bench: the benchmarks, one at a time (about 17 min on 2 cores; bench/README.md)
bench: $(STAMP)
	$(BIN)/python bench/train_throughput.py --threads 1
	$(BIN)/python bench/orchestration.py
	$(BIN)/python bench/dashboard_load.py

constraints: $(STAMP)
	{ head -3 requirements/constraints.txt; $(BIN)/pip freeze --exclude-editable; } > requirements/constraints.tmp
	mv requirements/constraints.tmp requirements/constraints.txt

clean:
	rm -rf $(DEMO) data/prepared models metrics

## paper: the source paper's setting (paper encoding, random row split, clone_id as a feature)
PAPER ?= results/paper
paper: $(STAMP)
	tcr-pipeline prepare -p experiments/paper.yaml --out $(PAPER)/prepared
	tcr-pipeline train -p experiments/paper.yaml --prepared $(PAPER)/prepared --out $(PAPER)/model
	tcr-pipeline evaluate --model $(PAPER)/model --prepared $(PAPER)/prepared --metrics $(PAPER)/metrics.json --write-card

## baseline: per-epitope logistic regression on CDR3 k-mers + V/J genes (TCR-grouped split)
baseline: $(STAMP)
	tcr-pipeline baseline --metrics results/baseline/metrics.json

## deploy / worker: the Prefect work pool and deployments, and a worker (deployments/README.md)
deploy: $(STAMP)
	bash deployments/deploy.sh

worker: $(STAMP)
	bash deployments/worker.sh
