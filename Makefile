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

.PHONY: help venv stack-up stack-down stack-status lint test test-unit unit-suite integration-suite lane-browser lane-integration run bench messages clean

help:
	@echo "make run         start the local stack and the three services, replay the sample webhooks"
	@echo "make test        the whole suite: stack up (if needed), ruff, mypy, pytest"
	@echo "make stack-up    start Kafka, SeaweedFS (S3), PostgreSQL, Prometheus on 127.0.0.1"
	@echo "make stack-down  stop them (no process left behind)"
	@echo "make bench       the benchmarks; figures in bench/results/"
	@echo "make messages    extract the console's texts (babel.cfg) and merge them into its catalogs (.po)"

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

# `make test`: everything is installed first (Debian packages, downloads: the unit tests call some of those tools,
# promtool for one). Then three jobs at once: the stack's servers start (mostly waiting: JVMs, readiness polls),
# ruff and mypy run, and so do the unit tests (pure logic, no server); then the integration and browser tests.
# PYTEST_ARGS go to every pytest run (a -m in them replaces a lane's own); a run they leave without a test (pytest's
# exit 5, e.g. -m unit for the others) is not a failure.
test: venv
	deploy/local/stack.sh install
	$(MAKE) --no-print-directory -j3 --output-sync=target stack-up lint unit-suite
	$(MAKE) --no-print-directory integration-suite

# The integration and browser tests: two lanes at once, each one pytest process (mostly waiting on servers, so two
# fill the machine better than one), then, alone, the few tests that stop a server of the shared stack or act on
# all of its data (marker exclusive). The browser lane holds tests/e2e (services on the demo's fixed ports,
# Chromium) and the tests that sign in as the local realm's people or change them (marker realm) or use the export
# jobs' queue, which a worker takes from oldest first whoever queued (marker export_queue); the integration lane
# the rest of tests/integration (each test on a prefix, topics and consumer groups of its own). Each lane has its
# own temporary folder; a lane's output is printed whole when it ends.
LANES_TMP := .stack/pytest-lanes
integration-suite: venv
	$(MAKE) --no-print-directory -j2 --output-sync=target lane-browser lane-integration
	mkdir -p $(LANES_TMP)
	$(VENV)/bin/pytest tests/integration tests/e2e -m exclusive --basetemp=$(LANES_TMP)/exclusive $(PYTEST_ARGS) \
	  || [ $$? -eq 5 ]

lane-browser: venv
	mkdir -p $(LANES_TMP)
	$(VENV)/bin/pytest tests/e2e tests/integration -m "(e2e or realm or export_queue) and not exclusive" \
	  --basetemp=$(LANES_TMP)/browser $(PYTEST_ARGS) || [ $$? -eq 5 ]

lane-integration: venv
	mkdir -p $(LANES_TMP)
	$(VENV)/bin/pytest tests/integration -m "not realm and not export_queue and not exclusive" \
	  --basetemp=$(LANES_TMP)/integration $(PYTEST_ARGS) || [ $$? -eq 5 ]

unit-suite: venv
	$(VENV)/bin/pytest tests/unit $(PYTEST_ARGS) || [ $$? -eq 5 ]

run: stack-up
	$(PY) -m devtools.devrun

bench: stack-up
	$(PY) -m bench.run $(BENCH_ARGS)

# The console's texts: Babel extracts them from its Python code and templates (babel.cfg) into the template catalog
# (.pot), then merges that into every language's catalog (.po): a new text is added untranslated, a changed one is
# kept as a fuzzy guess; both fail tests/unit/test_console_i18n.py until translated. The .po files are compiled in
# memory when the console starts (services/console/i18n.py), so there is no compile step.
LOCALE_DIR := services/console/locale
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

messages: venv
	$(VENV)/bin/pybabel extract -F babel.cfg --add-location=file --sort-output --project=wa-archive \
		--version=$(VERSION) --copyright-holder="the wa-archive authors" -o $(LOCALE_DIR)/messages.pot .
	$(VENV)/bin/pybabel update -i $(LOCALE_DIR)/messages.pot -d $(LOCALE_DIR) -D messages --ignore-obsolete

clean: stack-down
	rm -rf .stack
