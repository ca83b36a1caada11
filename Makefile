# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-scale demo lint sandbox-up sandbox-status down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The system packages the tests need (Docker, sshd, nginx, PostgreSQL, Chromium...), the
# sandbox (its progress shown here, not inside a test worker), then the suite: on two workers,
# then the few tests that must run alone.
test: install
	$(BIN)/deliver sandbox packages
	$(BIN)/deliver sandbox up
	$(BIN)/pytest -n 2 -m "not scale and not serial"
	$(BIN)/pytest -m serial

test-scale: install
	$(BIN)/pytest -m scale

demo: install
	$(BIN)/deliver sandbox up
	APPROVE=$(APPROVE) $(BIN)/python -m deliver.demo

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

sandbox-up: install
	$(BIN)/deliver sandbox up

sandbox-status: install
	$(BIN)/deliver sandbox status

down: install
	$(BIN)/deliver sandbox down

clean: down
	rm -rf $(VENV) .sandbox
