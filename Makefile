# The two set-up commands of the README: `make demo` and `make test`.
# Each works alone on a fresh clone: it creates ./.venv and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo up test lint protos docs-images clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[cpu,local,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mfr demo

up: $(STAMP)
	$(BIN)/mfr up

test: $(STAMP)
	bash scripts/test-prereqs.sh
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Re-take docs/img/leaderboard.png from the web page in headless chromium.
docs-images: $(STAMP)
	MFR_UPDATE_DOCS_IMAGES=1 $(BIN)/python -m pytest -q tests/e2e/test_web_leaderboard.py

clean:
	rm -rf $(VENV) .mfr .pytest_cache
