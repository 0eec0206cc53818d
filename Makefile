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
PENALTIES ?=
GRID_DIR  ?= runs/penalty_grid
ABLATIONS ?=
ABLATION_DIR ?= runs/ablations
EXP_ARGS  ?=
ARGS      ?=
MODEL      ?= deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
EVAL_DIR   ?= runs/eval/$(notdir $(MODEL))
BENCHMARKS ?= math500,aime24,amc,minerva,olympiad
EVAL_ARGS  ?=
RUNS       ?= $(EVAL_DIR)
BASELINE   ?=
REPORT_DIR ?= runs/eval/report

.PHONY: help install test test-fast demo lint bench penalty-grid ablations train eval table reproduce-dler-1p5b reproduce-dler-7b merge-sweep

# Tests and the demo run offline; these reach the hub for models and datasets.
train eval reproduce-dler-1p5b reproduce-dler-7b merge-sweep: export HF_HUB_OFFLINE := 0

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_ -]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-38s %s\n", $$1, $$2}'

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

eval: $(STAMP) ## evaluate MODEL with the paper's protocol into EVAL_DIR (resumable); extra flags in EVAL_ARGS="..."
	$(PY) -m dler eval --model $(MODEL) --benchmarks $(BENCHMARKS) --output-dir $(EVAL_DIR) $(EVAL_ARGS)

table: $(STAMP) ## Table 1, length analyses and plots of RUNS="dir ..." into REPORT_DIR (BASELINE=dir: length cut)
	$(PY) -m dler report $(RUNS) $(if $(BASELINE),--baseline $(BASELINE)) --output $(REPORT_DIR)

reproduce-dler-1p5b: SIZE := 1p5b
reproduce-dler-1p5b: BASE := deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B
reproduce-dler-7b: SIZE := 7b
reproduce-dler-7b: BASE := deepseek-ai/DeepSeek-R1-Distill-Qwen-7B
reproduce-dler-1p5b reproduce-dler-7b: $(STAMP) ## train DLER-R1, evaluate it and its base model, write Table 1
	$(MAKE) train RECIPE=recipes/dler_r1_$(SIZE).py
	$(MAKE) eval MODEL=runs/dler-r1-$(SIZE) EVAL_DIR=runs/eval/dler-r1-$(SIZE)
	$(MAKE) eval MODEL=$(BASE) EVAL_DIR=runs/eval/r1-$(SIZE)
	$(MAKE) table RUNS=runs/eval/dler-r1-$(SIZE) BASELINE=runs/eval/r1-$(SIZE) REPORT_DIR=runs/eval/report-$(SIZE)

penalty-grid: $(STAMP) ## Fig. 8: every penalty x {grpo, dler} with RECIPE, trained, evaluated, report in GRID_DIR/report
	$(PY) recipes/penalty_grid.py --recipe $(RECIPE) --output_dir $(GRID_DIR) $(if $(PENALTIES),--penalties $(PENALTIES)) --phase train $(EXP_ARGS) -- $(ARGS)
	$(PY) recipes/penalty_grid.py --recipe $(RECIPE) --output_dir $(GRID_DIR) $(if $(PENALTIES),--penalties $(PENALTIES)) --phase eval $(EXP_ARGS) -- $(ARGS)
	$(VENV)/bin/dler report $(GRID_DIR) > /dev/null

ablations: $(STAMP) ## DLER minus one component at a time with RECIPE, trained, evaluated, report in ABLATION_DIR/report
	$(PY) recipes/ablations.py --recipe $(RECIPE) --output_dir $(ABLATION_DIR) $(if $(ABLATIONS),--ablations $(ABLATIONS)) --phase train $(EXP_ARGS) -- $(ARGS)
	$(PY) recipes/ablations.py --recipe $(RECIPE) --output_dir $(ABLATION_DIR) $(if $(ABLATIONS),--ablations $(ABLATIONS)) --phase eval $(EXP_ARGS) -- $(ARGS)
	$(VENV)/bin/dler report $(ABLATION_DIR) > /dev/null

BASE_MODEL  ?= $(MODEL)
TUNED_MODEL ?= runs/dler-r1-1p5b
MERGE_DIR   ?= runs/merge
FRACTIONS   ?= 0.1,0.25,0.5
SCALES      ?= 0.5,0.7,1.0

merge-sweep: $(STAMP) ## update-selective merging (paper Sec. 4.6): FRACTIONS x SCALES merges of TUNED_MODEL onto BASE_MODEL, each evaluated, drawn with both on the accuracy-length plane
	$(PY) -m dler merge --base $(BASE_MODEL) --tuned $(TUNED_MODEL) --output $(MERGE_DIR)/models --top-fraction $(FRACTIONS) --scale $(SCALES)
	for cell in $(MERGE_DIR)/models/*/; do $(MAKE) eval MODEL=$$cell EVAL_DIR=$(MERGE_DIR)/eval/$$(basename $$cell); done
	$(MAKE) eval MODEL=$(BASE_MODEL) EVAL_DIR=$(MERGE_DIR)/eval/base
	$(MAKE) eval MODEL=$(TUNED_MODEL) EVAL_DIR=$(MERGE_DIR)/eval/tuned
	$(MAKE) table RUNS="$$(ls -d $(MERGE_DIR)/eval/*/ | grep -v /base/)" BASELINE=$(MERGE_DIR)/eval/base REPORT_DIR=$(MERGE_DIR)/report

# Recipes and protocols for other models (README "Reproducing the paper"): each target's settings are in its script.
.PHONY: eval-passk reproduce-nemotron-merge concise-qwen-math
eval-passk reproduce-nemotron-merge concise-qwen-math: export HF_HUB_OFFLINE := 0
NEMOTRON     := nvidia/Llama-3.1-Nemotron-Nano-8B-v1
CONCISE_DATA ?= runs/concise/math_train.jsonl
PASSK_ARGS   ?=
eval-passk: MODEL := Qwen/Qwen2.5-7B
eval-passk: $(STAMP) ## base-model pass@k (arXiv 2504.13837): MODEL, n=256, T=0.6, raw qwen-boxed prompt; flags in PASSK_ARGS="..."
	$(PY) recipes/eval_passk_base.py --model $(MODEL) --output-dir runs/passk/$(notdir $(MODEL)) $(PASSK_ARGS)

reproduce-nemotron-merge: $(STAMP) ## DLER on Nemotron-Nano-8B (paper Sec. 4.6), merge top 25% x 0.7, evaluate base, DLER and merged
	$(MAKE) train RECIPE=recipes/dler_nemotron_8b.py CONFIG=zero3_offload
	$(PY) -m dler merge --base $(NEMOTRON) --tuned runs/dler-nemotron-8b --output runs/dler-nemotron-8b-merged --top-fraction 0.25 --scale 0.7
	$(MAKE) eval MODEL=$(NEMOTRON) EVAL_DIR=runs/eval/nemotron-8b EVAL_ARGS="--prompt-format nemotron-think $(EVAL_ARGS)"
	$(MAKE) eval MODEL=runs/dler-nemotron-8b EVAL_DIR=runs/eval/dler-nemotron-8b EVAL_ARGS="--prompt-format nemotron-think $(EVAL_ARGS)"
	$(MAKE) eval MODEL=runs/dler-nemotron-8b-merged EVAL_DIR=runs/eval/dler-nemotron-8b-merged EVAL_ARGS="--prompt-format nemotron-think $(EVAL_ARGS)"
	$(MAKE) table RUNS="runs/eval/dler-nemotron-8b runs/eval/dler-nemotron-8b-merged" BASELINE=runs/eval/nemotron-8b REPORT_DIR=runs/eval/report-nemotron-8b

concise-qwen-math: $(STAMP) ## Concise Reasoning stage 2 on Qwen2.5-Math-7B: solve rates of CONCISE_DATA (JSONL), then RL on 4 problems
	$(PY) -m dler solve-rate --model Qwen/Qwen2.5-Math-7B --data $(CONCISE_DATA) --output runs/concise/qwen_rated.jsonl --prompt-format qwen25-math-cot --temperature 0.6 --max-tokens 3000
	$(MAKE) train RECIPE=recipes/concise_qwen_math.py

lint: $(STAMP) ## ruff lint and format check, and no library module over 400 lines (CI runs it before the tests)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	@find dler -name '*.py' -exec wc -l {} + | awk '$$2 != "total" && $$1 > 400 {print "over 400 lines: " $$2 " (" $$1 ")"; bad = 1} END {exit bad}'

bench: $(STAMP) ## benchmarks: print ratios against baselines measured in the same run
	$(PY) benchmarks/overhead.py
	$(PY) benchmarks/rewards.py
	$(PY) benchmarks/dynamic_sampling.py
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/loss_aggregation.py
	$(PY) benchmarks/merge.py
	$(PY) benchmarks/cpu_contention.py
