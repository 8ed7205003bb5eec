# amlwire: `make test` and `make demo` do all set-up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(DEPS_HASH)
TESTENV_BIN = $(shell ./hack/testenv.sh --print-bin)
PYTEST_ARGS ?=

.PHONY: help venv testenv node-deps crds check-crds docs lint test chaos demo bench bench-scale clean

help:
	@echo "make test   - set up everything (virtualenv, test control plane, helm) and run all checks and tests"
	@echo "make demo   - run amlwire end to end locally: apiserver + Azure sandbox + operator + examples"
	@echo "make crds   - regenerate crds/ and the chart's copy from the models"
	@echo "make docs   - regenerate docs/troubleshooting.md and docs/sandbox.md from their tables"
	@echo "make bench  - print the performance and reliability figures (bench/)"
	@echo "make bench-scale - 1,000 AmlJobs inside ARM's documented request budget (about six minutes)"
	@echo "make chaos  - only the reliability suite (AMLWIRE_CHAOS_SEED=<n> replays another campaign)"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[sandbox,test,dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

testenv:
	./hack/testenv.sh

# containerd, runc, podman, buildah, debootstrap for the node tier (tests/node) where root with apt; else a message
node-deps:
	./hack/node-deps.sh

crds: venv
	$(BIN)/python -m amlwire.api.crdgen

check-crds: venv
	$(BIN)/python -m amlwire.api.crdgen --check

docs: venv
	$(BIN)/python -c "from amlwire.domain.failures import troubleshooting_markdown as t; print(t(), end='')" \
		> docs/troubleshooting.md
	$(BIN)/python -c "from amlwire_sandbox.rules import markdown; print(markdown(), end='')" > docs/sandbox.md

lint: venv
	$(BIN)/ruff check operator tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

test: venv testenv node-deps lint check-crds
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/pytest $(PYTEST_ARGS)

chaos: venv testenv
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/pytest tests/reliability $(PYTEST_ARGS)

demo: venv testenv
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/amlwire demo $(DEMO_ARGS)

bench: venv testenv
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/python -m bench.wiring
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/python -m bench.jobs
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/python -m bench.chaos

bench-scale: venv testenv
	AMLWIRE_TESTENV_BIN=$(TESTENV_BIN) $(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
