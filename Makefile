# Quick start: `make demo` (the main job, then the UI) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)
export CZ_DATA_DIR ?= $(CURDIR)/.cz_data
export CZ_TENANTS_FILE ?= $(CURDIR)/demo/tenants.yaml

.PHONY: install demo test check bench sandbox clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Embedded Postgres + sandbox CRMs + a headless full sync of the demo tenants, then the UI.
demo: install
	@set -e; eval "$$($(BIN)/python -m cz_pipeline.warehouse.embedded)"; \
	. demo/env.sh; \
	$(BIN)/python -m cz_pipeline.sandbox --demo --mbox "$(CZ_DATA_DIR)/mail/demo.mbox" & SANDBOX=$$!; \
	trap 'kill $$SANDBOX 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m cz_pipeline.demo; \
	VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dg dev

test: install
	$(BIN)/python -m pytest -q

# `dg check defs` against the embedded instance.
check: install
	@eval "$$($(BIN)/python -m cz_pipeline.warehouse.embedded)"; VIRTUAL_ENV="$(CURDIR)/$(VENV)" PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dg check defs

bench: install
	$(BIN)/python benchmarks/close_sync.py --leads 5000
	$(BIN)/python benchmarks/cs_accounts.py

sandbox: install
	$(BIN)/python -m cz_pipeline.sandbox --demo

clean:
	rm -rf $(VENV) .cz_data
