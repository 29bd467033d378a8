# The two set-up commands of the README: `make demo` and `make test`.
# Each works alone on a fresh clone: it creates ./.venv and installs exactly the
# versions in requirements/dev.lock (docs/dependencies.md).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# `make lock LOCK_ARGS=--upgrade` moves every package to its newest allowed version;
# a plain `make lock` keeps the locked versions that still satisfy pyproject.toml.
LOCK_ARGS ?=
# Every lock is resolved for the images' platform: CPython 3.11, x86-64 Linux
# (glibc 2.28 or newer), with the hash of every file of every pinned version.
UV_COMPILE = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command 'make lock' $(LOCK_ARGS)
PROJECT_INPUTS := pyproject.toml requirements/build-system.in

.PHONY: demo up test test-images lint lock images images-cpu images-gpu protos docs-images clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# uv, by hash, with the interpreter's own pip; uv installs everything else.
$(BIN)/uv: requirements/bootstrap.lock | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes \
		--no-deps -r requirements/bootstrap.lock
	touch $@

# Re-install only when the lock changes. `sync` also removes what the lock lacks.
$(STAMP): requirements/dev.lock | $(BIN)/uv
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes --compile-bytecode \
		requirements/dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/mfr demo

up: $(STAMP)
	$(BIN)/mfr up

test: $(STAMP)
	bash scripts/test-prereqs.sh
	$(BIN)/lint-imports --no-cache
	bash scripts/test-lanes.sh $(BIN)/python $(PYTEST_ARGS)

# The images tier (tests/images): the dev overlay's workloads run from the CPU image.
test-images: images-cpu $(STAMP)
	$(BIN)/python -m pytest -m images --durations=10 $(PYTEST_ARGS) tests/images

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

# Regenerate the locks from pyproject.toml's ranges. The image locks are
# constrained by the development lock: a package has one version everywhere.
lock: | $(BIN)/uv
	$(UV_COMPILE) requirements/bootstrap.in -o requirements/bootstrap.lock
	$(UV_COMPILE) $(PROJECT_INPUTS) requirements/bootstrap.in --extra cpu --extra local --extra dev \
		-c requirements/bootstrap.lock -o requirements/dev.lock
	$(UV_COMPILE) $(PROJECT_INPUTS) --extra cpu -c requirements/dev.lock -o requirements/cpu.lock
	$(UV_COMPILE) $(PROJECT_INPUTS) --extra gpu -c requirements/dev.lock -o requirements/gpu.lock

# Both images with buildah (docs/images.md); images-cpu is what .ci/run builds.
images: images-cpu images-gpu
images-cpu images-gpu:
	bash scripts/build-images.sh $(subst images-,,$@)

protos: $(STAMP)
	$(BIN)/python scripts/gen_protos.py

# Re-take docs/img/leaderboard.png from the web page in headless chromium.
docs-images: $(STAMP)
	MFR_UPDATE_DOCS_IMAGES=1 $(BIN)/python -m pytest -q tests/e2e/test_web_leaderboard.py

clean:
	rm -rf $(VENV) .mfr .pytest_cache
