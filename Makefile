# dler: set-up, tests and demo. `make help` lists the targets.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

RECIPE    ?= recipes/dler_tiny.py
CONFIG    ?= zero2
NPROC     ?=
PENALTIES ?= truncation,cosine,kimi,laser,efficient,shorterbetter
GRID_DIR  ?= runs/penalty_grid
ARGS      ?=

.PHONY: help install test test-fast demo lint bench penalty-grid train

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	# torch first: DeepSpeed compiles against the torch that is already installed.
	$(PY) -m pip install "torch==2.13.0"
	$(PY) -m pip install --no-build-isolation -e ".[dev,deepspeed]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install dler with the dev and deepspeed extras

test: $(STAMP) ## run the whole test suite (CPU, offline)
	$(PY) -m pytest tests -q

test-fast: $(STAMP) ## the suite without the slow end-to-end and distributed tests
	$(PY) -m pytest tests -q -m "not slow and not distributed"

demo: $(STAMP) ## the embedded CPU demo
	$(PY) -m dler.demo

train: $(STAMP) ## train RECIPE=recipes/... with accelerate CONFIG=ddp|zero2|zero3|zero3_offload (NPROC=N, ARGS="...")
	PYTHON=$(PY) launch/run.sh --config $(CONFIG) $(if $(NPROC),--nproc $(NPROC)) $(RECIPE) $(ARGS)

penalty-grid: $(STAMP) ## the paper's Fig. 8 grid: PENALTIES x {grpo, dler} with RECIPE; extra settings in ARGS="..."
	$(PY) recipes/penalty_grid.py --recipe $(RECIPE) --penalties $(PENALTIES) --output_dir $(GRID_DIR) -- $(ARGS)

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check .

bench: $(STAMP) ## benchmarks: print ratios against baselines measured in the same run
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/rewards.py
