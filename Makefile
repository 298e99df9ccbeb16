# agentbus tasks. `make help` lists them. Everything installs itself: a fresh clone needs only python3.
SHELL := /bin/bash
PY ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYPROJECTS := pyproject.toml uv.lock shared/pyproject.toml cli/pyproject.toml $(wildcard services/*/pyproject.toml)
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: help install run test test-unit check lint format schemas clean postgres chromium eval bench chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(UV):
	$(PY) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv

$(STAMP): $(UV) $(PYPROJECTS)
	$(UV) sync --python $(PY) --locked --all-packages
	@touch $(STAMP)

install: $(STAMP) ## create .venv with every package (uv workspace)

run: $(STAMP) ## start the embedded stack (broker, Postgres, every service) and run the demo; Ctrl-C stops
	$(BIN)/agentbus up --demo

test: $(STAMP) postgres chromium ## the whole suite: unit, contract, integration and e2e on the embedded stack
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The tests use the machine's Postgres server (DATABASE_URL, default 127.0.0.1:5432/test) as well as
# embedded Postgres; start the server if it is installed but stopped.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || { \
	  command -v pg_ctlcluster >/dev/null && \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; } || \
	  echo "warning: no Postgres server at 127.0.0.1:5432; set DATABASE_URL to one"

# The console's browser test drives Debian's chromium (Playwright's own browser downloads are not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium: ## install Debian's chromium for tests/e2e/test_console_browser.py if it is missing
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

eval: $(STAMP) postgres ## golden and adversarial eval suites on a fresh embedded stack, held to evals/baseline.json
	$(BIN)/agentbus eval

bench: $(STAMP) ## the pipeline against a bare relay on the same broker (figures, not a test)
	$(BIN)/agentbus bench

chaos: $(STAMP) ## the long chaos run (2,000 tickets, 20+ faults; report in .agentbus/chaos-report.json) and the sabotage control run
	AGENTBUS_CHAOS_LONG=1 AGENTBUS_CHAOS_REPORT=.agentbus/chaos-report.json \
	  $(BIN)/python -m pytest -q -s -p no:cacheprovider \
	  tests/chaos/test_chaos_sabotage.py::test_the_same_faults_pass_with_the_rules_kept \
	  tests/chaos/test_chaos.py::test_chaos_long

test-unit: $(STAMP) ## fast tests only (no broker, no database)
	$(BIN)/python -m pytest -q tests/unit tests/contract

schemas: $(STAMP) ## regenerate schemas/ from the event models
	$(BIN)/agentbus schemas --write

lint: $(STAMP) ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared/src cli/src services/*/src

format: $(STAMP) ## apply ruff formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint test ## lint, type-check and test

clean: ## remove the environment and runtime state
	rm -rf $(VENV) $(TOOLS) .agentbus
