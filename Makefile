# Everything runs from a project-local virtual environment that these targets build.
# torch is pinned: 2.13.0 is a CPU build from this machine's disk here, a CUDA build on a GPU box.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0
# Benchmarks: tier (quick | full), extra pytest options, and where a run's JSON and report go.
# Each run gets new, timestamped files: an earlier run or report is never overwritten.
TIER       ?= quick
BENCH_ARGS ?= --benchmark-max-time=0.5 --benchmark-min-rounds=3
RUN        := bench-$(TIER)-$(shell date -u +%Y%m%dT%H%M%SZ)
BENCH_JSON ?= reports/runs/$(RUN).json
REPORT     ?= reports/$(RUN).md

.PHONY: setup test bench report check list kernels gpu clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the tests across every core (pytest-xdist; Hypothesis profile: SW_HYPOTHESIS_PROFILE=ci|thorough, default ci).
TEST_ARGS ?= -n auto
test: $(STAMP)
	$(BIN)/pytest $(TEST_ARGS)

## The main job: time every implementation and peer on the $(TIER) tier, then write the report.
## A failing implementation is recorded in the report; the exit status still says it failed.
bench: $(STAMP)
	mkdir -p $(dir $(BENCH_JSON))
	$(BIN)/pytest --benchmark-only --tier $(TIER) --benchmark-json=$(BENCH_JSON) $(BENCH_ARGS); \
	status=$$?; \
	$(BIN)/swbench report $(BENCH_JSON) --output $(REPORT) $(if $(NOTES),--notes $(NOTES)) && exit $$status

## Rebuild a report from saved runs: make report RUNS="reports/runs/a.json [b.json ...]" REPORT=reports/x.md [NOTES=notes.md]
report: $(STAMP)
	$(BIN)/swbench report $(RUNS) --output $(REPORT) $(if $(NOTES),--notes $(NOTES))

## Check every implementation against the reference: the quick tier (CHECK_TIER=full: every case, 20 random specs).
CHECK_TIER ?= quick
check: $(STAMP)
	$(BIN)/swbench check --tier $(CHECK_TIER)

list: $(STAMP)
	$(BIN)/swbench list

## Regenerate reports/kernels.md (ptxas figures of every GPU kernel, sm_80 and sm_90; no GPU needed).
kernels: $(STAMP)
	$(BIN)/swbench kernels --output reports/kernels.md --overwrite

## The GPU day (README "On a GPU machine"): every GPU phase in one run, into $(GPU_OUTPUT) ($$OUT when set).
## Runs with the machine's own python3 and packages: no virtual environment, no pip (make gpu PYTHON=python3).
## make gpu GPU_ARGS=--dry-run: every phase on the CPU here (host builds, Numba's simulator, tiny shapes).
GPU_ARGS   ?=
GPU_OUTPUT ?= $(if $(OUT),$(OUT),reports/gpu-day/$(shell date -u +%Y%m%dT%H%M%SZ))
gpu:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PYTHON) -m harness.cli gpu --output $(GPU_OUTPUT) $(GPU_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
