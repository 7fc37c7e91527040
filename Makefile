# wa-archive — the commands a user and CI run. See README.md.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: help venv stack-up stack-down stack-status lint test test-unit run bench clean

help:
	@echo "make run         start the local stack and the three services, replay the sample webhooks"
	@echo "make test        the whole suite: stack up (if needed), ruff, mypy, pytest"
	@echo "make stack-up    start Kafka, SeaweedFS (S3), PostgreSQL, Prometheus on 127.0.0.1"
	@echo "make stack-down  stop them (no process left behind)"
	@echo "make bench       the benchmarks; figures in bench/results/"

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

stack-up: venv
	deploy/local/stack.sh up

stack-down:
	deploy/local/stack.sh down

stack-status:
	deploy/local/stack.sh status

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test-unit: venv
	$(VENV)/bin/pytest -m unit $(PYTEST_ARGS)

test: stack-up lint
	$(VENV)/bin/pytest $(PYTEST_ARGS)

run: stack-up
	$(PY) -m devtools.devrun

bench: stack-up
	$(PY) -m bench.run $(BENCH_ARGS)

clean: stack-down
	rm -rf .stack
