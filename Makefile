# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

# Offline by construction: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
# Stage commands (`python -m stages.x`, `torchrun`) must find the venv's interpreter.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help install lock demo test test-slow test-fast lint bench bench-pipeline gpu-check results results-committed counts readme plots-template clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-zA-Z_-]+):.*## (.*)/\1\t\2/' | expand -t 20

install: $(STAMP) ## create .venv and install the pinned dependencies (requirements.lock)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# Re-pin every installed distribution after changing pyproject.toml (keeps the lock's header comment).
lock: install ## re-pin every installed distribution into requirements.lock
	{ grep '^#' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable --all | grep -v '^pip=='; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

demo: install ## run the demo pipeline (dvc repro) and print its metrics
	$(BIN)/dvc repro
	@$(BIN)/python scripts/show_metrics.py metrics/eval.json

# The tests marked `slow` (multi-run byte identity, DVC experiment loops, kill-and-rerun, DDP) are
# `make test-slow`; README's real-data block (marked `readme`) runs in `make test`. CI runs both.
# Two pytest-xdist workers: the real-data block (minutes, collected first) on one, the rest beside it.
TEST_WORKERS ?= 2
test: install ## ruff and the test suite with README's real-data block run verbatim (offline, CPU)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow or readme"

test-slow: install ## the end-to-end tests `make test` leaves out (pipeline runs, byte identity, DDP)
	$(BIN)/pytest -q -m "slow and not readme"

# The edit-test loop: neither the slow tests nor README's real-data block.
test-fast: install ## the tests not marked slow
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow"

lint: install ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install ## run the benchmarks README shows (installs ffmpeg if missing); assemble results/bench.md
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq ffmpeg)
	$(BIN)/python -m benchmarks.extract
	$(BIN)/python -m benchmarks.attributes
	$(BIN)/python -m benchmarks.train_step
	$(BIN)/python -m benchmarks.loader
	$(BIN)/python scripts/readme_tables.py bench

# On one GPU (under 8 minutes by design, not yet measured: no GPU was lent): one table, results/bench/gpu_check.md.
gpu-check: install ## on a GPU: train step fp32/bf16/compile, loader, eval, tiny 2-epoch run -> one table
	$(BIN)/python -m benchmarks.gpu_check

# A full `dvc repro` of the demo in a fresh clone, then a no-op repro and `dvc exp run -S stage=2`: about an hour on 2 cores.
bench-pipeline: install ## DVC's own cost: no-op repro and a stage-2 experiment against a full run (prints only)
	$(BIN)/python -m benchmarks.pipeline

# results/demo.md, README's results table: every method at each stage it has (8 configurations) x 3 seeds as queued
# DVC experiments (needs `make demo` first);
# experiments DVC already holds are kept while they ran on today's code, data and models; stale ones are removed and re-run.
# RESULTS_JOBS=2 runs two at a time, each on one thread (EVA_NUM_THREADS=1): the thread count is part of the
# numerics, so those runs compute other bits than `make demo` (docs/reproducibility.md).
# RESULTS_QUEUE="--ablations" adds the eva attribute-token ablations (18 more runs); RESULTS_QUEUE="--only 'cmp-eva-*'"
# queues a subset by name pattern.
RESULTS_JOBS ?= 1
RESULTS_QUEUE ?=
results: install ## every method x 3 seeds as DVC experiments on the demo -> results/demo.md (1-1.5 hours on 2 cores)
	$(BIN)/python scripts/results_table.py queue $(RESULTS_QUEUE)
	$(if $(filter 1,$(RESULTS_JOBS)),,EVA_NUM_THREADS=1) $(BIN)/dvc queue start -j $(RESULTS_JOBS)
	$(BIN)/python scripts/results_table.py wait
	$(BIN)/python scripts/results_table.py table --out results/demo.md

# results/demo.md from the workspace's one run (metrics/eval.json of `dvc repro`) instead of `make results`.
results-committed: install ## results/demo.md from the committed demo run (metrics/eval.json), in seconds
	$(BIN)/python scripts/results_table.py committed --out results/demo.md

counts: install ## results/params.md: tunable / total parameters of every method and preset
	{ echo '<!-- written by `make counts` (scripts/param_counts.py): do not edit -->'; \
	  $(BIN)/python scripts/param_counts.py; echo; echo 'Presets (`--presets`):'; echo; \
	  $(BIN)/python scripts/param_counts.py --presets; } > results/params.md.tmp
	mv results/params.md.tmp results/params.md

readme: install ## copy the generated tables under results/ into README.md
	$(BIN)/python scripts/readme_tables.py

# vendor/vega/dvc_plots.html: the offline page `dvc plots show` renders into (.dvc/config plots.html_template).
plots-template: install ## re-vendor vega, vega-lite and vega-embed from npm into vendor/vega/
	rm -rf .vega-pack && mkdir .vega-pack
	cd .vega-pack && npm pack --silent vega@5.20.2 vega-lite@5.2.0 vega-embed@6.18.2
	$(BIN)/python scripts/vega_template.py .vega-pack
	rm -rf .vega-pack

clean: ## remove the pipeline's outputs
	rm -rf data/demo data/index shards attributes models checkpoints dvclive metrics/plots
