# Seed — two commands do all the set-up on a fresh Debian 12 (see README.md):
#   make demo   install what is missing, start the sandbox, run the main job end to end
#   make test   install what is missing, lint + type-check, run the whole test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-system demo test lint bench clean

install: install-system $(BIN)/.installed

install-system:
	@bash scripts/install-system.sh

$(BIN)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps -e .  # the `seed` command
	touch $@

demo: install
	$(BIN)/python scripts/demo.py

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

# every benchmark runs (one missing its target does not stop the others); then the
# target fails, naming those that missed (exit status 1) or broke
bench: install
	@failed=""; for b in bench/*.py; do case "$$b" in */common.py) continue;; esac; \
		$(BIN)/python "$$b" || failed="$$failed $$b"; done; \
	if [ -n "$$failed" ]; then echo "make bench: missed or failed:$$failed" >&2; exit 1; fi

clean:
	rm -rf $(VENV) .cache .seed .mypy_cache .ruff_cache .pytest_cache
