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

.PHONY: install lock demo test test-fast lint bench results clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	touch $@

# Re-pin every installed distribution after changing pyproject.toml (keeps the lock's header comment).
lock: install
	{ grep '^#' requirements.lock; $(BIN)/python -m pip freeze --exclude-editable --all | grep -v '^pip=='; } > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock

demo: install
	$(BIN)/dvc repro
	@$(BIN)/python scripts/show_metrics.py metrics/eval.json

test: install
	$(BIN)/ruff check .
	$(BIN)/pytest -q

# The edit-test loop: everything but the tests marked `slow` (end-to-end runs, DDP, the demo pipeline).
test-fast: install
	$(BIN)/pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	command -v ffmpeg >/dev/null || (apt-get update -qq && apt-get install -y -qq ffmpeg)
	$(BIN)/python benchmarks/extract.py
	$(BIN)/python benchmarks/attributes.py
	$(BIN)/python benchmarks/train_step.py
	$(BIN)/python benchmarks/pipeline.py

# The README's results table: 14 configurations x 3 seeds as queued DVC experiments (needs `make demo` first);
# experiments DVC already holds are kept while they ran on today's code, data and models; stale ones are removed and re-run.
# RESULTS_JOBS=2 runs two at a time, each on one thread (OMP_NUM_THREADS=1): on 2 cores that is faster.
# RESULTS_QUEUE="--only 'cmp-*-s?-seed*'" queues a subset by name pattern (here: the methods' own rows, 24 of 42 runs).
RESULTS_JOBS ?= 1
RESULTS_QUEUE ?=
results: install
	$(BIN)/python scripts/results_table.py queue $(RESULTS_QUEUE)
	$(if $(filter 1,$(RESULTS_JOBS)),,OMP_NUM_THREADS=1) $(BIN)/dvc queue start -j $(RESULTS_JOBS)
	$(BIN)/python scripts/results_table.py wait
	$(BIN)/python scripts/results_table.py table

clean:
	rm -rf data/demo data/index shards attributes models checkpoints dvclive metrics/plots
