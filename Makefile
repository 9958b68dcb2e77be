# Every target creates .venv and installs what it needs; nothing is expected to be installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

.PHONY: install system-deps demo demo-all test test-gpu lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,dashboard,postgres]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/medsweep demo

demo-all: $(STAMP)
	$(BIN)/medsweep demo --all

# chromium, postgresql and shellcheck for the tests that need them (skipped where impossible).
system-deps:
	bash deploy/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

# The CUDA paths (bf16/fp16 autocast, NCCL, fractional GPUs, every family) on a GPU machine; CI
# has none, so `make test` skips them. Then the GPU figures: make bench ARGS="--only gpu".
test-gpu: $(STAMP)
	$(BIN)/python -c "import sys, torch; torch.cuda.is_available() or sys.exit('test-gpu: no CUDA device on this machine')"
	$(BIN)/python -m pytest -q -rs tests/gpu tests/orchestrator/test_trainer.py

lint: $(STAMP)
	$(BIN)/ruff check orchestrator tasks tests benchmarks
	$(BIN)/ruff format --check orchestrator tasks tests benchmarks
	$(BIN)/mypy

# Every benchmark in its own process; those whose targets assume one core pin themselves.
# Options pass through: make bench ARGS="--only store eval", ARGS="--quick", ARGS="--list".
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info medsweep_results data/demo
