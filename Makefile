# Everything runs from a project-local virtual environment that these targets build.
# torch is pinned: 2.13.0 is a CPU build from this machine's disk here, a CUDA build on a GPU box.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
TORCH  ?= torch==2.13.0

.PHONY: setup test bench check list kernels clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Run the tests (Hypothesis profile: SW_HYPOTHESIS_PROFILE=ci|thorough, default ci).
test: $(STAMP)
	$(BIN)/pytest

## Run the benchmarks.
bench: $(STAMP)
	$(BIN)/pytest --benchmark-only

## Check every implementation against the reference on cases/ plus random specs.
check: $(STAMP)
	$(BIN)/swbench check

list: $(STAMP)
	$(BIN)/swbench list

## Regenerate reports/kernels.md (ptxas figures of every GPU kernel, sm_80 and sm_90; no GPU needed).
kernels: $(STAMP)
	$(BIN)/swbench kernels --output reports/kernels.md --overwrite

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
