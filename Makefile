# bastion: `make demo` sets up and runs the lifecycle demo; `make test` runs every check.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest install lock bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The lock pins every package (pip freeze of the dev and bench extras), so it is installed
# without resolving: torchattacks declares torchvision, which this torch cannot import and
# which the tests never need. bastion itself is installed editable without resolving again.
$(STAMP): $(BIN)/python requirements.lock pyproject.toml
	$(BIN)/pip install --quiet --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/bastion demo

lint: install
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest -n 2 --timeout 600

test: lint typecheck pytest

bench: install
	$(BIN)/python benchmarks/run_all.py

# Regenerate the lock from pyproject.toml (a developer step; commit the result).
lock: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/pip freeze --exclude-editable | grep -v '^bastion' \
	  | sed -E 's|^([A-Za-z0-9_.-]+) @ file://.*/[A-Za-z0-9_.]+-([0-9][^-%+]*)[-%+].*|\1==\2|' > requirements.lock
	$(BIN)/python scripts/gen_runtime_requirements.py  # the Dockerfile's runtime subset

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
