# Qizhi (旗帜): two commands. GNU make.
#   make run   set up .venv if needed, then serve the product with demo data on embedded SQLite
#   make test  set up .venv if needed, then ruff and pytest (SQLite; PostgreSQL too in CI or when
#              QIZHI_TEST_POSTGRES_URL is set)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := run

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever pyproject.toml changes (new dependency, new entry point).
STAMP := $(VENV)/.qizhi-installed
# Browser libraries (htmx, bpmn-js, ECharts) at the versions package-lock.json pins.
NPM_STAMP := node_modules/.qizhi-installed
CI_POSTGRES_URL := postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: run test ci-packages translations

run: $(STAMP) $(NPM_STAMP)
	QIZHI_DEMO=1 $(BIN)/qizhi serve

test: $(STAMP) $(NPM_STAMP) ci-packages
	$(BIN)/ruff check .
	env -u QIZHI_TEST_DATABASE_URL $(BIN)/pytest
	@url="$${QIZHI_TEST_POSTGRES_URL:-}"; \
	if [ -z "$$url" ] && [ "$${CI:-}" = true ]; then url='$(CI_POSTGRES_URL)'; fi; \
	if [ -n "$$url" ]; then \
	  echo "== pytest again on PostgreSQL"; \
	  QIZHI_TEST_DATABASE_URL="$$url" QIZHI_TEST_POSTGRES_URL="$$url" $(BIN)/pytest; \
	fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $@

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# After changing user-facing text: extract messages (templates, Python, forms/*.json), merge them
# into the English catalog, and compile it. tests/test_i18n.py fails while any English is missing.
translations: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg -k _l --no-location --sort-output -o web/translations/messages.pot .
	$(BIN)/pybabel update -i web/translations/messages.pot -d web/translations -l en --no-fuzzy-matching
	$(BIN)/pybabel compile -d web/translations -l en

# Browser tests need Chromium, and CJK fonts so that screenshots show Chinese rather than boxes. Only in CI, only when missing, and never fatal:
# without apt (or root) it says so and the browser tests skip themselves.
ci-packages:
	@if [ "$${CI:-}" != true ] || [ -x /usr/bin/chromium ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "warning: apt-get not found, chromium not installed; browser tests will be skipped" >&2; exit 0; \
	fi; \
	sudo=""; \
	if [ "$$(id -u)" != 0 ]; then \
	  if command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else \
	    echo "warning: not root and no sudo, chromium not installed; browser tests will be skipped" >&2; exit 0; \
	  fi; \
	fi; \
	echo "installing chromium and fonts-noto-cjk with apt-get (browser tests need them)"; \
	if $$sudo apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends chromium fonts-noto-cjk >/dev/null; then \
	  echo "chromium installed: $$(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"; \
	else \
	  echo "warning: apt-get could not install chromium; browser tests will be skipped" >&2; \
	fi
